"""Alias kept for one release: :mod:`batlit.report.stats`."""

from .report.stats import (CHUNK, bootstrap_draws, class_accuracies, difference_interval, mcnemar_exact,
                           pair_runs, paired_bootstrap, wilson_interval)

__all__ = ["CHUNK", "bootstrap_draws", "class_accuracies", "difference_interval", "mcnemar_exact", "pair_runs",
           "paired_bootstrap", "wilson_interval"]
