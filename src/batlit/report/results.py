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


def read_npz(data: bytes, max_bytes: int) -> dict[str, Any]:
    """The arrays of an ``.npz`` read from a run folder (per-image and partial evaluation files):
    plain arrays only (``allow_pickle=False``), and the sizes the archive declares checked against
    ``max_bytes`` before anything is inflated. ``ValueError`` for anything else."""
    import io
    import zipfile

    import numpy as np

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        declared = sum(info.file_size for info in archive.infolist())
    if declared > max_bytes:
        raise ValueError(f"it would inflate to {declared} bytes, more than the {max_bytes} expected")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def worst_interval(summary: Mapping[str, Any], class_names: Sequence[str], metric: str
                   ) -> tuple[str, int, int, float, float] | None:
    """(worst class, its errors k, its images n, Wilson 95% low, high) of ``<metric>_worst``, from the
    per-class error and ``count_per_class``; None without the counts."""
    from .stats import wilson_interval

    counts, name = summary.get("count_per_class"), summary.get(f"{metric}_worst_class")
    if counts is None or name not in class_names or summary.get(f"{metric}_worst") is None:
        return None
    n = int(counts[list(class_names).index(name)])
    k = min(n, max(0, round(float(summary[f"{metric}_worst"]) * n)))  # the rate is k/n exactly
    low, high = wilson_interval(k, n)
    return name, k, n, low, high


def interval_lines(summary: Mapping[str, Any], class_names: Sequence[str]) -> list[str]:
    """One line per metric: the worst class's error with its 95% Wilson interval over its images.
    The interval is that class's image-sampling uncertainty; it does not allow for the worst class
    being picked as the largest of K noisy rates, so the true worst rate is if anything lower."""
    lines = []
    for key, title in METRICS:
        found = worst_interval(summary, class_names, key)
        if found is not None:
            name, k, n, low, high = found
            lines.append(f"  worst {title:<4} {100 * k / max(n, 1):6.2f}% ({name}, {k} of {n} images), "
                         f"95% Wilson interval [{100 * low:.2f}, {100 * high:.2f}]")
    return lines


def format_table(summary: Mapping[str, Any], class_names: Sequence[str], intervals: bool = False) -> str:
    """A per-class table in %: one row per class, then avg and worst (per metric, with its class).

    ``intervals``: below the table, the worst class of each metric with its 95% Wilson interval over
    that class's images (:func:`interval_lines`)."""
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
    if intervals:
        lines += interval_lines(summary, class_names)
    return "\n".join(lines)
