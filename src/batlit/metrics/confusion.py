"""The confusion matrix of an evaluation attack, counted on the device without a host sync."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class ConfusionCounts(Metric):
    """``(K, K)`` counts, rows the true class and columns the prediction (torchmetrics'
    ``MulticlassConfusionMatrix`` without normalisation): the target-class fairness the BAT paper's
    Figure 2 plots. Counted by ``scatter_add_`` into a flat ``K·K`` state, where torchmetrics'
    ``torch.bincount`` reads its input's maximum back to the host on a GPU: two syncs per
    evaluation batch (docs/performance.md, "GPU readiness")."""

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.add_state("counts", default=torch.zeros(num_classes * num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds``: labels ``(N,)`` or logits ``(N, K)``; ``target``: labels ``(N,)``."""
        preds = preds.argmax(dim=1) if preds.ndim == 2 else preds
        if preds.shape != target.shape:
            raise ValueError(f"preds and target must give N labels each, got {preds.shape} and {target.shape}")
        index = target.long() * self.num_classes + preds.long()
        self.counts.scatter_add_(0, index, torch.ones_like(index))

    def compute(self) -> Tensor:
        return self.counts.view(self.num_classes, self.num_classes).clone()
