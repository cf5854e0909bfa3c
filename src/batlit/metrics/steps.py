"""Source-class fairness: how many attack steps each class takes to cross the decision boundary."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class StepsToBoundary(Metric):
    """Per class, the mean index of the first misclassified attack iterate (the BAT paper's
    source-class statistic) and the fraction of samples never misclassified within the budget.

    ``update(steps, target)`` takes ``boundary_pgd(...).steps`` (``max_steps`` where never crossed).
    ``compute()`` returns ``mean_per_class`` (NaN for unseen classes), ``mean`` (over samples) and
    ``never_per_class`` / ``never`` (fractions).
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, num_classes: int, max_steps: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.max_steps = num_classes, max_steps
        for name in ("total", "steps_sum", "never"):
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, steps: Tensor, target: Tensor) -> None:
        target = target.long()
        self.total.scatter_add_(0, target, torch.ones_like(target))  # bincount reads its max back from a GPU
        self.steps_sum.scatter_add_(0, target, steps.long())
        self.never.scatter_add_(0, target, (steps >= self.max_steps).long())

    def compute(self) -> dict[str, Tensor]:
        seen = self.total > 0
        nan = torch.full((self.num_classes,), float("nan"), device=self.total.device)
        denom = self.total.clamp(min=1).float()
        n = self.total.sum().clamp(min=1).float()
        return {
            "mean_per_class": torch.where(seen, self.steps_sum / denom, nan),
            "never_per_class": torch.where(seen, self.never / denom, nan),
            "mean": self.steps_sum.sum() / n,
            "never": self.never.sum() / n,
        }
