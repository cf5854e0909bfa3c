"""Friendly Adversarial Training (Zhang et al., ICML 2020), as in zjfheart/Friendly-Adversarial-Training.

FAT changes only the attack: early-stopped PGD returns the iterate at the (τ+1)-th misclassified
evaluation — BAT's ``first_adv`` — with τ growing over training, and adds ω·N(0, I) to each step.
``FAT`` trains with PGD-AT's loss (their ``FAT.py``), ``FATTRADES`` with TRADES' (``FAT_for_TRADES.py``).
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from ..attacks import boundary_pgd
from .pgd_at import PGDAT
from .trades import TRADES


def tau_at(schedule: Sequence[Sequence[int]], epoch: int) -> int:
    """τ for a 1-based ``epoch`` from ``[[first_epoch, tau], ...]`` (the last entry reached wins)."""
    tau = 0
    for first_epoch, value in sorted(schedule):
        if epoch >= first_epoch:
            tau = int(value)
    return tau


class FriendlyAttack:
    """The early-stopped PGD both FAT variants use, on their objective's attack loss from its
    start (:mod:`~batlit.methods.objectives`); ``tau`` follows the epoch."""

    def _setup_friendly(self, tau_schedule: Sequence[Sequence[int]], omega: float, init_std: float) -> None:
        for entry in tau_schedule:
            if len(entry) != 2 or entry[0] < 1 or entry[1] < 0:
                raise ValueError(f"method.tau_schedule entries must be [first_epoch >= 1, tau >= 0], got {entry}")
        if omega < 0:
            raise ValueError(f"method.omega must be >= 0, got {omega}")
        self.tau_schedule = [list(map(int, e)) for e in tau_schedule]
        self.omega, self.init_std = float(omega), float(init_std)

    @property
    def tau(self) -> int:
        return tau_at(self.tau_schedule, self.epoch)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        return boundary_pgd(self.model, x, y, tau=self.tau, loss=self.base.attack_loss, init=self.base.attack_init,
                            init_std=self.init_std, step_noise_std=self.omega, **self.train_attack).first_adv

    def on_train_epoch_start(self) -> None:
        self.log("train/tau", float(self.tau))


class FAT(FriendlyAttack, PGDAT):
    """FAT for AT: CE(f(x̃), y), x̃ from CE early-stopped PGD with a uniform start and ω = 0.001."""

    def __init__(self, *args, tau_schedule=((1, 0), (51, 1), (91, 2)), omega: float = 0.001,
                 init_std: float = 0.001, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup_friendly(tau_schedule, omega, init_std)


class FATTRADES(FriendlyAttack, TRADES):
    """FAT for TRADES: CE(f(x), y) + β·KL(f(x) ‖ f(x̃)), x̃ from KL early-stopped PGD from x + 0.001·N(0, I).

    Two train-mode forwards by default, clean then adversarial, both terms sharing the clean logits:
    FAT_for_TRADES.py's ``natural_logits = model(output_natural); adv_logits = model(output_adv)``
    (TRADES' own ``trades_loss`` makes three; :func:`~batlit.methods.objectives.trades_logits`).
    """

    def __init__(self, *args, tau_schedule=((1, 0), (31, 1), (51, 2), (71, 3)), omega: float = 0.0,
                 init_std: float = 0.001, reuse_clean_logits: bool = True, **kwargs) -> None:
        super().__init__(*args, init_std=init_std, reuse_clean_logits=reuse_clean_logits, **kwargs)
        self._setup_friendly(tau_schedule, omega, init_std)
