"""TRADES (Zhang et al. 2019), as in yaodongyu/TRADES ``trades_loss``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..attacks import pgd
from .base import AdversarialMethod
from .losses import kl_from_logits


class TRADES(AdversarialMethod):
    """L = CE(f(x), y) + β·(1/m) Σ KL(f(x) ‖ f(x_adv)),  x_adv = PGD on that KL from x + 0.001·N(0, I).

    β = 1/λ; the paper compares β = 1 and β = 6.
    """

    def __init__(self, *args, beta: float = 6.0, init_std: float = 0.001, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.beta, self.init_std = float(beta), float(init_std)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        return pgd(self.model, x, y, loss="kl", init="normal", init_std=self.init_std, **self.train_attack)

    def objective(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        logits, logits_adv = self.model(x), self.model(x_adv)
        natural = F.cross_entropy(logits, y)
        robust = kl_from_logits(logits, logits_adv)
        return {"loss": natural + self.beta * robust, "natural": natural, "robust_kl": robust}
