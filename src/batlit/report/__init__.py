"""What a run prints and what ``python -m batlit.report`` makes of many runs.

- :mod:`.results`: a run's per-class table and its metrics.json (batlit.train, batlit.evaluate);
- :mod:`.stats`: Wilson intervals, McNemar's test, paired bootstraps;
- :mod:`.tables`: paper-style tables and figures across runs and seeds (``python -m batlit.report``);
- :mod:`.gallery`: the BAT paper's Figure 5, bad cases beside their nearest training images (batlit.analyze).
"""

from .tables import (AUDIT_MAIN, COLUMNS, IGNORED_KEYS, IGNORED_PREFIXES, Group, PerImage, ReportError, Run,
                     analyses, analysis_table, audit_run, class_state_table, cost_table, epoch_times, find_runs,
                     flatten, group_runs, main, markdown, noise_note, paired_comparisons, paired_table,
                     per_class_table, plot_clean_vs_robust, plot_per_class, plot_source_target, read_per_image,
                     report, rho, study_wall_seconds, table_rows, worst_class_rows)

__all__ = ["AUDIT_MAIN", "COLUMNS", "IGNORED_KEYS", "IGNORED_PREFIXES", "Group", "PerImage", "ReportError", "Run",
           "analyses", "analysis_table", "audit_run", "class_state_table", "cost_table", "epoch_times", "find_runs",
           "flatten", "group_runs", "main", "markdown", "noise_note", "paired_comparisons", "paired_table",
           "per_class_table", "plot_clean_vs_robust", "plot_per_class", "plot_source_target", "read_per_image",
           "report", "rho", "study_wall_seconds", "table_rows", "worst_class_rows"]
