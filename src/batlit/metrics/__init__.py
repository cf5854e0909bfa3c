"""torchmetrics for robust fairness."""

from .classwise import ClassWiseRobustness

__all__ = ["ClassWiseRobustness"]
