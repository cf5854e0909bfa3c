"""TRADES (Zhang et al. 2019), as in yaodongyu/TRADES ``trades_loss``."""

from __future__ import annotations

from torch import Tensor

from . import registry
from .base import AdversarialMethod
from .objectives import TRADESObjective, trades_logits  # noqa: F401 - trades_logits: its home before objectives.py


class TRADES(AdversarialMethod):
    """L = CE(f(x), y) + β·(1/m) Σ KL(f(x) ‖ f(x_adv)),  x_adv = PGD on that KL from x + 0.001·N(0, I)
    (:class:`~batlit.methods.objectives.TRADESObjective`).

    β = 1/λ; the paper compares β = 1 and β = 6. ``fused_forward`` / ``reuse_clean_logits`` choose
    the train-mode forwards (:func:`~batlit.methods.objectives.trades_logits`; the authors' three by default).
    """

    hparam_rules = {"beta": registry.NONNEGATIVE}
    sync_checks = {"trades": {}}

    def __init__(self, *args, beta: float = 6.0, init_std: float = 0.001, fused_forward: bool = False,
                 reuse_clean_logits: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.base = TRADESObjective.from_options(beta=beta, init_std=init_std, fused_forward=fused_forward,
                                                 reuse_clean_logits=reuse_clean_logits)
        self.beta, self.init_std = self.base.beta, self.base.init_std

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        return self.base.attack(self.model, x, y, **self.train_attack)

    def objective(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        return self.base.loss(self.model, x, y, x_adv)
