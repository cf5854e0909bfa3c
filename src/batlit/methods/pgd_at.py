"""PGD adversarial training (Madry et al. 2018)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..attacks import pgd
from .base import AdversarialMethod


class PGDAT(AdversarialMethod):
    """min_θ E max_{‖δ‖∞≤ε} CE(f(x+δ), y): CE on PGD-K examples from a uniform random start."""

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        return pgd(self.model, x, y, loss="ce", init="uniform", **self.train_attack)

    def objective(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        return {"loss": F.cross_entropy(self.model(x_adv), y)}
