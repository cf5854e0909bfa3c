"""PGD adversarial training (Madry et al. 2018)."""

from __future__ import annotations

from torch import Tensor

from .base import AdversarialMethod
from .objectives import PGDATObjective


class PGDAT(AdversarialMethod):
    """min_θ E max_{‖δ‖∞≤ε} CE(f(x+δ), y): CE on PGD-K examples from a uniform random start
    (:class:`~batlit.methods.objectives.PGDATObjective`)."""

    sync_checks = {"pgd_at": {}}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.base = PGDATObjective()

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        return self.base.attack(self.model, x, y, **self.train_attack)

    def objective(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        return self.base.loss(self.model, x, y, x_adv)
