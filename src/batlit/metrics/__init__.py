"""torchmetrics for robust fairness."""

from .classwise import ClassWiseRobustness
from .steps import StepsToBoundary

__all__ = ["ClassWiseRobustness", "StepsToBoundary"]
