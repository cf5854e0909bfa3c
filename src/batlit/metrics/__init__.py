"""torchmetrics for robust fairness."""

from .classwise import ClassWiseRobustness
from .confusion import ConfusionCounts
from .steps import StepsToBoundary

__all__ = ["ClassWiseRobustness", "ConfusionCounts", "StepsToBoundary"]
