"""Turning class-wise results into the per-class table a run prints and the metrics.json it writes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from torch import Tensor

METRICS = (("std", "Std"), ("bndy", "Bndy"), ("rob", "Rob"))


def results_to_json(results: Mapping[str, Tensor], class_names: Sequence[str]) -> dict[str, Any]:
    """Tensors from ClassWiseRobustness.compute() as plain JSON values, worst classes by name."""
    out: dict[str, Any] = {}
    for key, value in results.items():
        if key.endswith("_worst_class"):
            out[key] = class_names[int(value)]
        elif value.ndim == 0:
            out[key] = float(value)
        elif value.ndim > 1 or not value.is_floating_point():
            out[key] = value.tolist()  # counts: the confusion matrix, count_per_class
        else:
            out[key] = [None if math.isnan(v) else v for v in value.tolist()]
    return out


def format_table(summary: Mapping[str, Any], class_names: Sequence[str]) -> str:
    """A per-class table in %: one row per class, then avg and worst (per metric, with its class)."""
    width = max(12, *(len(c) + 2 for c in class_names))

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    header = f"{'class':<{width}}" + "".join(f"{title:>22}" for _, title in METRICS)
    rule = "-" * len(header)
    lines = [header, rule]
    counts = summary.get("count_per_class")
    for i, name in enumerate(class_names):
        cells = "".join(f"{pct(summary[key + '_per_class'][i]):>22}" for key, _ in METRICS)
        lines.append(f"{name:<{width}}{cells}" + (f"  (n={counts[i]})" if counts is not None else ""))
    lines.append(rule)
    lines.append(f"{'avg':<{width}}" + "".join(f"{pct(summary[key + '_avg']):>22}" for key, _ in METRICS))
    worst = [f"{pct(summary[key + '_worst'])} ({summary[key + '_worst_class']})" for key, _ in METRICS]
    lines.append(f"{'worst':<{width}}" + "".join(f"{cell:>22}" for cell in worst))
    return "\n".join(lines)
