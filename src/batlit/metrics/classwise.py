"""Class-wise standard, boundary and robust error (Xu et al. 2021; the BAT paper's Table 1)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def _labels(pred: Tensor) -> Tensor:
    """Accept logits/probabilities (N, K) or labels (N,)."""
    return pred.argmax(dim=1) if pred.ndim == 2 else pred


class ClassWiseRobustness(Metric):
    """Per class c, with clean predictions p, adversarial predictions a and labels y (docs/design.md §4):

    - standard error  std_c  = P(p ≠ y | y = c)
    - boundary error  bndy_c = P(p = y and a ≠ y | y = c)
    - robust error    rob_c  = P(p ≠ y or a ≠ y | y = c) = std_c + bndy_c

    ``compute()`` returns fractions: ``{std,bndy,rob}_avg`` (mean over classes seen),
    ``{std,bndy,rob}_worst`` (max over classes, per metric), ``{std,bndy,rob}_worst_class``
    (its index) and ``{std,bndy,rob}_per_class`` (NaN for a class with no samples).
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        for name in ("total", "std_errors", "bndy_errors"):
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, clean: Tensor, adv: Tensor, target: Tensor) -> None:
        clean, adv, target = _labels(clean), _labels(adv), target.long()
        if not (clean.shape == adv.shape == target.shape):
            raise ValueError(f"clean, adv and target must give N labels each, got {clean.shape}, {adv.shape}, {target.shape}")
        clean_right = clean == target
        boundary = clean_right & (adv != target)
        self.total.scatter_add_(0, target, torch.ones_like(target))  # bincount reads its max back from a GPU
        self.std_errors.scatter_add_(0, target, (~clean_right).long())
        self.bndy_errors.scatter_add_(0, target, boundary.long())

    def compute(self) -> dict[str, Tensor]:
        seen = self.total > 0
        total = self.total.clamp(min=1).double()
        per_class = {
            "std": self.std_errors / total,
            "bndy": self.bndy_errors / total,
        }
        per_class["rob"] = (self.std_errors + self.bndy_errors) / total
        out: dict[str, Tensor] = {}
        for name, errors in per_class.items():
            errors = torch.where(seen, errors, torch.full_like(errors, float("nan")))
            masked = torch.where(seen, errors, torch.full_like(errors, -1.0))
            out[f"{name}_avg"] = errors[seen].mean().float()
            out[f"{name}_worst"] = masked.max().float()
            out[f"{name}_worst_class"] = masked.argmax()
            out[f"{name}_per_class"] = errors.float()
        out["count_per_class"] = self.total.clone()
        return out
