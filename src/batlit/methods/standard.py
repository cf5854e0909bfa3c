"""Standard (clean) training: the reference point for the robust-fairness gap."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import AdversarialMethod


class Standard(AdversarialMethod):
    """L = CE(f(x), y). No attack during training; evaluation still runs PGD."""

    def perturb(self, x: Tensor, y: Tensor) -> None:
        return None

    def objective(self, x: Tensor, y: Tensor, examples: None) -> dict[str, Tensor]:
        return {"loss": F.cross_entropy(self.model(x), y)}
