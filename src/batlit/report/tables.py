"""Paper-style tables and figures across runs and seeds: ``python -m batlit.report RUN_DIR... [--baseline RUN_DIR]``.

Each RUN_DIR is a training run (it holds ``metrics.json``), an audited model's folder
(``batlit.evaluate weights=...``: one row each, main columns from its ``eval_pgd20.json``) or any
folder above them, such as a Hydra multirun directory; every run below it is read. Runs are grouped by method and by the
config values that differ between them (the seed aside), and each group becomes one row of a
table like the paper's Table 1: average and worst-class standard, boundary and robust error in %,
mean ± standard deviation over its seeds. ``eval_<attack>.json`` files written by
``batlit.evaluate`` beside a run add ``<attack>`` robust-error columns (AutoAttack, CW, ...).
With ``--baseline``, ρ columns compare each row with the baseline's mean (docs/design.md §4, DAFA):
ρ = (worst − worst_base)/worst_base − (avg_base − avg)/avg_base on accuracies; higher is better.

Writes ``report.md`` (with per-class tables), ``report.csv``, ``per_class_errors.png`` (the
paper's Figure 4), ``clean_vs_robust.png`` (Figure 1), a training-time table from the runs' CSV
logs and, for runs analysed by
``batlit.analyze``, ``source_target_classes.png`` (Figure 2) into ``--out`` (default:
``<RUN_DIR>/report`` for one directory, else ``outputs/report``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..config import ConfigError
from ..safe_io import (UnsafeFileError, atomic_savefig, atomic_text_writer, atomic_write_text, check_out_dir,
                       csv_cell, printable, read_plain_yaml, read_regular_bytes, read_regular_text)
from .results import METRICS, read_npz, worst_interval

# Config keys that say where or how a run was executed, not what was trained.
IGNORED_PREFIXES = ("paths.", "logger.", "hydra.", "objective.")
IGNORED_KEYS = {"task_name", "ckpt_path", "resume", "test", "data.root", "data.num_workers", "data.eval_batch_size",
                "data.download", "data.cache_dir", "method.init_ckpt", "trainer.default_root_dir",
                "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
                "trainer.devices", "trainer.accelerator", "trainer.num_nodes", "trainer.strategy",
                "trainer.deterministic", "trainer.plugins", "trainer.callbacks",
                "model.channels_last", "model.fold_batchnorm", "data.on_device", "compile", "resume",
                "stop_on_nonfinite_loss",
                "callbacks", "slurm.auto_requeue", "slurm.requeue_signal"}
COLUMNS = [(f"{key}_{kind}", f"{title} {label}") for key, label in METRICS for kind, title in
           (("avg", "Avg"), ("worst", "Worst"))]


@dataclass
class Run:
    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]              # flattened: "method.alpha" -> 1.0
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # attack name -> eval JSON

    @property
    def method(self) -> str:
        return str(self.metrics.get("method") or self.config.get("method._target_", "?").rsplit(".", 1)[-1])


@dataclass
class Group:
    label: str
    runs: list[Run]

    def values(self, key: str, attack: str | None = None) -> list[float]:
        """One value per run: a metrics.json key, or an eval JSON's when attack is given."""
        sources = [r.metrics if attack is None else r.evals.get(attack, {}) for r in self.runs]
        return [float(s[key]) for s in sources if s.get(key) is not None]

    def mean(self, key: str, attack: str | None = None) -> float | None:
        values = self.values(key, attack)
        return statistics.fmean(values) if values else None

    def sd(self, key: str, attack: str | None = None) -> float | None:
        values = self.values(key, attack)
        return statistics.stdev(values) if len(values) > 1 else None

    def per_class(self, metric: str) -> list[float]:
        """Mean over seeds of a per-class error vector."""
        rows = [r.metrics[f"{metric}_per_class"] for r in self.runs]
        return [statistics.fmean(v for v in col if v is not None) if any(v is not None for v in col)
                else math.nan for col in zip(*rows)]


class ReportError(Exception):
    pass


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list):
        return {prefix[:-1]: json.dumps(node)}
    return {prefix[:-1]: node}


def _read_json(path: Path, inside: Path) -> Any:
    """A JSON file of a run folder: a bounded regular file inside it (safe_io), one line if it is not JSON."""
    try:
        return json.loads(read_regular_text(path, inside=inside))
    except (ValueError, RecursionError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ReportError(f"{path}: not a readable JSON file ({type(err).__name__})") from None


def _read_evals(run_dir: Path) -> dict[str, dict[str, Any]]:
    evals = {}
    for eval_path in sorted(run_dir.glob("eval_*.json")):
        record = _read_json(eval_path, run_dir)
        name = record.get("attack", {}).get("name") or eval_path.stem[5:]
        if record.get("precision", "fp32") != "fp32":  # a bf16 evaluation is its own column
            name = f"{name}_{record['precision']}"
        evals[name] = record
    return evals


#: The evaluation whose numbers fill an audited model's main columns: the attack a run's test split uses.
AUDIT_MAIN = "pgd20"


def audit_run(run_dir: Path, evals: dict[str, dict[str, Any]]) -> Run:
    """A folder of ``batlit.evaluate weights=...`` results as one row: its main columns from its
    ``eval_pgd20.json`` (a trained run's test-split attack), else from its first evaluation, which
    the label then names; its evaluations as the extra columns, as for a run."""
    main_name = AUDIT_MAIN if AUDIT_MAIN in evals else sorted(evals)[0]
    main = evals[main_name]
    label = f"{run_dir.name} [audit: {main.get('model', '?')}" + ("" if main_name == AUDIT_MAIN else f", {main_name}") + "]"
    attack = main.get("attack") or {}
    metrics = {**main, "method": label, "num_test_samples": main.get("n_samples"), "data": main.get("data"),
               "attack": {**attack, "steps": attack.get("steps", main_name)}}
    config = {"audit": {"weights": Path(str(main.get("weights"))).name, "model": main.get("model"),
                        "data": main.get("data"), "normalization": (main.get("normalization") or {}).get("name")}}
    return Run(run_dir, metrics, flatten(config), evals)


def find_runs(paths: Sequence[Path], what: str = "RUN_DIR") -> list[Run]:
    """The training runs (folders with ``metrics.json``) under each path, and the audited models
    (folders whose ``eval_*.json`` name ``weights``: :func:`audit_run`)."""
    runs, seen = [], set()
    for root in paths:
        if not root.exists():
            raise ReportError(f"{what}: '{root}' does not exist")
        before = len(runs)
        found = sorted(root.rglob("metrics.json")) if root.is_dir() else []
        audits = sorted({p.parent for p in root.rglob("eval_*.json")} - {p.parent for p in found}) if root.is_dir() else []
        if not found and not audits:
            raise ReportError(f"{what}: no metrics.json under '{root}' (is it a batlit.train run or multirun folder?)")
        for metrics_path in found:
            run_dir = metrics_path.parent.resolve()
            if run_dir in seen:
                continue
            seen.add(run_dir)
            config_path = run_dir / "config.yaml"
            config = read_plain_yaml(config_path, inside=run_dir) if os.path.lexists(config_path) else {}
            runs.append(Run(run_dir, _read_json(metrics_path, run_dir), flatten(config or {}), _read_evals(run_dir)))
        for folder in audits:
            run_dir = folder.resolve()
            evals = _read_evals(run_dir)
            if run_dir in seen or not any(isinstance(r, dict) and r.get("weights") for r in evals.values()):
                continue
            seen.add(run_dir)
            runs.append(audit_run(run_dir, evals))
        if not found and len(runs) == before:
            raise ReportError(f"{what}: no metrics.json or audited model under '{root}'")
    return runs


def _shown(path: Path) -> str:
    """A run's folder as report.csv names it: relative to the working directory where it lies below
    it, so a report kept in a repository names no machine's absolute path."""
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES) or key.rsplit(".", 1)[-1] == "seed"


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _fmt_key(key: str, value: Any) -> str:
    """``alpha=0.5``; a class path by its last name: ``model=resnet18``."""
    if key.endswith("._target_"):
        return f"{key[:-len('._target_')]}={str(value).rsplit('.', 1)[-1]}"
    return f"{key.removeprefix('method.')}={_fmt_value(value)}"


def _varying(runs: Sequence[Run], keys: Iterable[str]) -> list[str]:
    return [k for k in sorted(keys) if not _ignored(k)
            and len({json.dumps(r.config.get(k), sort_keys=True, default=str) for r in runs}) > 1]


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs that differ only in seed (and where they ran) share a group; labels name what differs.

    Within each method, the settings that differ between its runs split it into groups and are
    named in the label: its own hyper-parameters first (``bat (alpha=0.5, beta=6)``), then anything
    else (``model=wrn34_10``, ``epochs=30``). What differs only between methods is the method.
    """
    by_method: dict[str, list[Run]] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    groups: dict[tuple, Group] = {}
    for method, members in by_method.items():
        varying = [k for k in _varying(members, {k for r in members for k in r.config}) if k != "method._target_"]
        shown = [k for k in varying if k.startswith("method.")] + [k for k in varying if not k.startswith("method.")]
        # the class count follows from the class choice (data.classes / exclude_classes): group by it, don't name it
        named = [k for k in shown if not k.endswith(".num_classes")] or shown
        for run in members:
            key = (method, *(json.dumps(run.config.get(k), default=str) for k in shown))
            if key not in groups:
                parts = [_fmt_key(k, run.config.get(k)) for k in named]
                groups[key] = Group(method + (f" ({', '.join(parts)})" if parts else ""), [])
            groups[key].runs.append(run)
    return list(groups.values())


def rho(avg: float, worst: float, base_avg: float, base_worst: float) -> float:
    """DAFA's ρ on accuracies from errors: (worst − worst_b)/worst_b − (avg_b − avg)/avg_b."""
    acc, worst_acc, base_acc, base_worst_acc = 1 - avg, 1 - worst, 1 - base_avg, 1 - base_worst
    if base_acc <= 0 or base_worst_acc <= 0:
        return math.nan
    return (worst_acc - base_worst_acc) / base_worst_acc - (base_acc - acc) / base_acc


def table_rows(groups: Sequence[Group], baseline: Group | None) -> tuple[list[str], list[list[str]], list[dict]]:
    """Markdown header and cells, and one numeric CSV record per group."""
    attacks = sorted({a for g in groups for r in g.runs for a in r.evals})
    header = ["Method", "Seeds", *(title for _, title in COLUMNS)]
    header += [f"{a} {kind} Rob" for a in attacks for kind in ("Avg", "Worst")]
    rho_keys = [("std", None), ("rob", None), *(("rob", a) for a in attacks)] if baseline else []
    header += [f"ρ {m}" + (f" {a}" if a else "") for m, a in rho_keys]

    def cell(g: Group, key: str, attack: str | None = None) -> str:
        mean, sd = g.mean(key, attack), g.sd(key, attack)
        if mean is None:
            return "-"
        return f"{100 * mean:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None else "")

    rows, records = [], []
    for g in groups:
        row = [g.label, str(len(g.runs)), *(cell(g, key) for key, _ in COLUMNS)]
        record: dict[str, Any] = {"method": g.label, "seeds": len(g.runs),
                                  "runs": ";".join(_shown(r.path) for r in g.runs)}
        for key, _ in COLUMNS:
            record[f"{key}_mean"], record[f"{key}_sd"] = g.mean(key), g.sd(key)
        for a in attacks:
            for kind in ("avg", "worst"):
                row.append(cell(g, f"rob_{kind}", a))
                record[f"{a}_rob_{kind}_mean"], record[f"{a}_rob_{kind}_sd"] = g.mean(f"rob_{kind}", a), g.sd(f"rob_{kind}", a)
        for m, a in rho_keys:
            values = [g.mean(f"{m}_avg", a), g.mean(f"{m}_worst", a),
                      baseline.mean(f"{m}_avg", a), baseline.mean(f"{m}_worst", a)]
            r = rho(*values) if None not in values else math.nan
            row.append("-" if math.isnan(r) else f"{r:+.3f}")
            record["rho_" + m + (f"_{a}" if a else "")] = None if math.isnan(r) else r
        rows.append(row)
        records.append(record)
    return header, rows, records


def markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _class_names(groups: Sequence[Group]) -> list[str] | None:
    """The runs' class names, or None when they differ (e.g. the paper's Table 4 class subsets)."""
    names = {tuple(r.metrics.get("class_names") or ()) for g in groups for r in g.runs}
    return list(names.pop()) if len(names) == 1 else None


def per_class_table(groups: Sequence[Group], metric: str) -> tuple[list[str], list[list[str]]]:
    """One row per group: its per-class error in % (mean over seeds), by class name, so runs on
    different subsets of the classes line up ('-' where a group has no such class)."""
    names: list[str] = []
    # the group with the most classes first, so a full run's class order leads
    for g in sorted(groups, key=lambda g: -len(g.runs[0].metrics.get("class_names") or ())):
        names += [n for n in g.runs[0].metrics.get("class_names") or () if n not in names]
    rows = []
    for g in groups:
        values = dict(zip(g.runs[0].metrics.get("class_names") or (), g.per_class(metric)))
        rows.append([g.label, *(f"{100 * values[n]:.1f}" if n in values and not math.isnan(values[n]) else "-"
                                for n in names)])
    return ["Method", *names], rows


def class_state_table(groups: Sequence[Group]) -> tuple[list[str], list[list[str]]] | None:
    """The class-wise methods' final per-class state (metrics.json ``class_state``: weights, ε
    scales, multipliers), mean over a group's seeds: one row per group and state, one column per
    class (WAT's extra entry, the average expert, as ``avg``). None when no run has any."""
    names: list[str] = []
    rows: list[list[str]] = []
    for g in groups:
        states = [r.metrics.get("class_state") or {} for r in g.runs]
        classes = list(g.runs[0].metrics.get("class_names") or ())
        for state in sorted(set().union(*states)):
            vectors = [s[state] for s in states if state in s]
            mean = [statistics.fmean(col) for col in zip(*vectors)]
            labels = classes + ["avg"] if len(mean) == len(classes) + 1 else classes
            names += [n for n in labels if n not in names]
            values = dict(zip(labels, mean))
            rows.append([g.label, state, *(f"{values[n]:.3g}" if n in values else "-" for n in names)])
    if not rows:
        return None
    width = 2 + len(names)
    return ["Method", "State", *names], [row + ["-"] * (width - len(row)) for row in rows]


def plot_per_class(groups: Sequence[Group], class_names: list[str], path: Path) -> None:
    """The paper's Figure 4: per-class standard, boundary and robust error of several runs side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    K, n = len(class_names), len(groups)
    pos, width = np.arange(K), 0.8 / max(n, 1)
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.9 * K + 0.4 * n), 9), sharex=True)
    for ax, (key, title) in zip(axes, METRICS):
        for i, g in enumerate(groups):
            ax.bar(pos - 0.4 + width * (i + 0.5), 100 * np.asarray(g.per_class(key)), width, label=g.label)
        ax.set_ylabel(f"{title} error (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars stay visible
    axes[-1].set_xticks(pos, class_names, rotation=45 if K > 6 else 0, ha="right" if K > 6 else "center")
    fig.suptitle("Per-class errors (mean over seeds)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_clean_vs_robust(groups: Sequence[Group], class_names: list[str], path: Path) -> None:
    """The paper's Figure 1: clean and robust accuracy per class, one panel per run group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    K, n = len(class_names), len(groups)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(5, 0.55 * K) * cols, 3.6 * rows), squeeze=False, sharey=True)
    pos = np.arange(K)
    for ax, g in zip(axes.flat, groups):
        clean = 100 - 100 * np.asarray(g.per_class("std"))
        robust = 100 - 100 * np.asarray(g.per_class("rob"))
        ax.bar(pos - 0.2, clean, 0.4, label="clean", color="tab:blue")
        ax.bar(pos + 0.2, robust, 0.4, label="robust (PGD)", color="tab:red")
        ax.set_title(g.label, fontsize=9)
        ax.set_xticks(pos, class_names, rotation=45 if K > 6 else 0, ha="right" if K > 6 else "center", fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def epoch_times(run: Run) -> list[tuple[float, float]]:
    """(seconds, training images/s) of each training epoch the run logged (``perf/epoch_seconds``
    and ``perf/train_images_per_s`` in ``csv/metrics.csv``); [] when it has no CSV log."""
    path = run.path / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with io.StringIO(read_regular_text(path, inside=run.path), newline="") as f:
        return [(float(row["perf/epoch_seconds"]), float(row.get("perf/train_images_per_s") or "nan"))
                for row in csv.DictReader(f) if row.get("perf/epoch_seconds")]


def cost_table(groups: Sequence[Group]) -> tuple[list[str], list[list[str]], dict[str, dict[str, float]]]:
    """Per group: epochs timed, fastest and median epoch (s) and median training images/s, over
    every epoch of its runs (the fastest epoch is the figure least disturbed by other work on the
    machine; the median is the typical one); then, per run on average, the wall time of training
    with its validation and test (metrics.json ``wall_seconds``, summed over resumed sessions) and
    of each evaluation after it (the eval JSONs' ``seconds``), in minutes and seconds."""
    evals = sorted({name for g in groups for r in g.runs for name in r.evals})
    header = ["Method", "Epochs timed", "Fastest epoch (s)", "Median epoch (s)", "Median train images/s",
              "Run wall (min)", *[f"{name} (s)" for name in evals]]
    rows, numbers = [], {}
    for g in groups:
        times = [t for r in g.runs for t in epoch_times(r)]
        if not times:
            continue
        seconds = [t for t, _ in times]
        rates = [r for _, r in times if not math.isnan(r)]
        numbers[g.label] = {"epochs_timed": len(times), "epoch_seconds_min": min(seconds),
                            "epoch_seconds_median": statistics.median(seconds),
                            "train_images_per_s_median": statistics.median(rates) if rates else math.nan}
        n = numbers[g.label]
        walls = [sum(w.values()) for r in g.runs if (w := r.metrics.get("wall_seconds"))]
        if walls:
            n["run_wall_seconds_mean"] = statistics.fmean(walls)
        row = [g.label, str(len(times)), f"{n['epoch_seconds_min']:.1f}", f"{n['epoch_seconds_median']:.1f}",
               f"{n['train_images_per_s_median']:.0f}",
               f"{n['run_wall_seconds_mean'] / 60:.1f}" + ("" if len(walls) == len(g.runs) else f" ({len(walls)} of {len(g.runs)})")
               if walls else "-"]
        for name in evals:
            spent = [float(r.evals[name]["seconds"]) for r in g.runs if "seconds" in r.evals.get(name, {})]
            if spent:
                n[f"{name}_seconds_mean"] = statistics.fmean(spent)
            row.append(f"{statistics.fmean(spent):.0f}" if spent else "-")
        rows.append(row)
    return header, rows, numbers


def noise_note(runs: Sequence[Run]) -> str:
    """One line: the binomial standard error of a class's error rate at its largest (p = 0.5),
    50/√n points for the smallest class of n images, on the run's test split and in each evaluation
    (the first run that has it). Seeds add their own spread: the tables' ± columns."""
    parts = []
    counts = runs[0].metrics.get("count_per_class") if runs else None
    if counts:
        parts.append(f"±{50 / math.sqrt(min(counts)):.1f} on the test split ({min(counts)} images in its smallest class)")
    for name in sorted({n for r in runs for n in r.evals}):
        counts = next((r.evals[name].get("count_per_class") for r in runs if r.evals.get(name, {}).get("count_per_class")),
                      None)
        if counts:
            parts.append(f"±{50 / math.sqrt(min(counts)):.1f} under {name} ({min(counts)} images a class)")
    if not parts:
        return ""
    return ("Noise: one class's error has a binomial standard error of at most 50/√n points on n images: "
            + "; ".join(parts) + ".")


def _sources(runs: Sequence[Run]) -> list[tuple[str, str | None]]:
    """(title, attack) of each evaluation the runs hold: the test split (attack None) first."""
    return [("test split", None)] + [(a, a) for a in sorted({a for r in runs for a in r.evals})]


def worst_class_rows(groups: Sequence[Group]) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    """One row per run: for the test split and each evaluation, its worst class by robust error, the
    class's images and its 95% Wilson interval over them (markdown cells and CSV records)."""
    sources = _sources([r for g in groups for r in g.runs])
    header = ["Method", "Run", *(f"{title} worst Rob" for title, _ in sources)]
    rows, records = [], []
    for g in groups:
        for r in g.runs:
            row = [g.label, _shown(r.path)]
            for title, attack in sources:
                summary = r.metrics if attack is None else r.evals.get(attack)
                names = (summary or {}).get("class_names") or r.metrics.get("class_names") or []
                found = worst_interval(summary, names, "rob") if summary else None
                if found is None:
                    row.append("-")
                    continue
                name, k, n, low, high = found
                row.append(f"{100 * k / n:.2f} [{100 * low:.2f}, {100 * high:.2f}] ({name}, n={n})")
                records.append({"method": g.label, "run": _shown(r.path), "evaluation": title, "class": name,
                                "n": n, "rob_errors": k, "rob_error": k / n, "wilson_low": low, "wilson_high": high})
            rows.append(row)
    return header, rows, records


@dataclass
class PerImage:
    """One evaluation's per-image outcomes (``eval_<attack>.npz``, docs/evaluation.md)."""

    path: Path
    index: Any            # int64 (n,): each image's index in the test split
    label: Any            # (n,)
    robust: Any           # bool (n,): right clean and after every component
    fingerprint: dict[str, Any]
    num_classes: int


def read_per_image(run: Run, attack: str) -> PerImage | None:
    """The per-image file an eval JSON names, read as a bounded regular file inside the run folder;
    None when the JSON names none or the file is not there (results kept without their .npz)."""
    import numpy as np

    record = run.evals.get(attack) or {}
    name = record.get("per_image")
    if name is None:
        return None
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".npz"):
        raise ReportError(f"{run.path}: the {attack} evaluation names per_image={str(name)[:80]!r}, not a .npz file "
                          "beside it")
    path = run.path / name
    if not path.exists() and not path.is_symlink():
        return None
    n, components = record.get("n_samples"), record.get("components") or []
    if not isinstance(n, int) or n < 1:
        raise ReportError(f"{run.path}: the {attack} evaluation's n_samples={n!r} is not a count of images")
    try:
        bound = 2**20 + 8 * n * (len(components) + 3)  # int64 at most per value, names and fingerprint
        z = read_npz(read_regular_bytes(path, inside=run.path, max_bytes=bound), bound)
        index, label, clean, adv = (z[k] for k in ("index", "label", "clean_pred", "adv_pred"))
        fingerprint = json.loads(str(z["fingerprint"]))
    except UnsafeFileError as err:
        raise ReportError(str(err)) from None
    except Exception as err:
        raise ReportError(f"{path}: not a per-image file batlit can read ({type(err).__name__}: "
                          f"{str(err)[:120]})") from None
    if not (index.shape == label.shape == clean.shape == (n,) and adv.shape == (len(components), n)):
        raise ReportError(f"{path}: its arrays do not fit the {n} images and {len(components)} components of "
                          f"{path.with_suffix('.json').name}")
    robust = (adv[-1] == label) if len(components) else (clean == label)
    return PerImage(path, index.astype(np.int64), label.astype(np.int64), robust.astype(bool), fingerprint,
                    len(record.get("class_names") or run.metrics.get("class_names") or []) or int(label.max()) + 1)


def _seed(run: Run) -> Any:
    return run.metrics.get("seed", run.config.get("seed"))


def paired_comparisons(groups: Sequence[Group], baseline: Group | None = None, draws: int = 2000
                       ) -> list[dict[str, Any]]:
    """Two groups of runs compared on the same images, per evaluation that both have per-image files
    for: each group against the baseline (``--baseline``), else every pair of groups.

    - McNemar's exact test (:func:`batlit.report.stats.mcnemar_exact`) on each pair of runs, paired by seed
      where both groups have it (:func:`batlit.report.stats.pair_runs`): images robust under one run only.
    - A paired bootstrap (:func:`batlit.report.stats.paired_bootstrap`) over the images and, where a group
      has several runs, over its runs: the difference A − B in average and worst-class robust accuracy
      with its 95% interval.

    Every per-image file of one evaluation must come from the same images (its fingerprint: count,
    eval_seed, hash of indices and labels); one from another subset is a ReportError naming both files.
    """
    from itertools import combinations

    import numpy as np

    from .stats import bootstrap_draws, difference_interval, mcnemar_exact, pair_runs

    everyone = list(groups) + ([baseline] if baseline is not None else [])
    attacks = sorted({a for g in everyone for r in g.runs for a in r.evals})
    out = []
    for attack in attacks:
        found: dict[int, list[tuple[Run, PerImage]]] = {}
        first: PerImage | None = None
        for gi, g in enumerate(everyone):
            for r in g.runs:
                p = read_per_image(r, attack)
                if p is None:
                    continue
                if first is None:
                    first = p
                elif p.fingerprint != first.fingerprint or not np.array_equal(p.index, first.index) \
                        or not np.array_equal(p.label, first.label):
                    raise ReportError(f"per-image files of {attack} from different test images: {first.path} "
                                      f"({_subset_words(first.fingerprint)}) and {p.path} "
                                      f"({_subset_words(p.fingerprint)}); paired comparisons need the same test "
                                      "split, n_samples and eval_seed")
                found.setdefault(gi, []).append((r, p))
        if first is None:
            continue
        if baseline is not None:
            pairs = [(gi, len(everyone) - 1) for gi in range(len(groups)) if gi in found and len(everyone) - 1 in found]
        else:
            pairs = list(combinations(sorted(found), 2))
        robust = {gi: np.stack([p.robust for _, p in found[gi]]) for gi in found}
        # each group's bootstrap once (its runs from its own stream), paired by the shared image draws
        boots = {gi: bootstrap_draws(robust[gi], first.label, first.num_classes, draws, seed=0, stream=gi + 1)
                 for gi in {g for pair in pairs for g in pair}}
        for ia, ib in pairs:
            a, b = found[ia], found[ib]
            ra, rb = robust[ia], robust[ib]
            boot = difference_interval(boots[ia], boots[ib])
            tests = []
            for i, j in pair_runs([_seed(r) for r, _ in a], [_seed(r) for r, _ in b]):
                only_a, only_b = int((ra[i] & ~rb[j]).sum()), int((~ra[i] & rb[j]).sum())
                tests.append({"seed_a": _seed(a[i][0]), "seed_b": _seed(b[j][0]), "only_a": only_a,
                              "only_b": only_b, "p": mcnemar_exact(only_a, only_b)})
            out.append({"attack": attack, "a": everyone[ia].label, "b": "baseline" if baseline is not None
                        and ib == len(everyone) - 1 else everyone[ib].label, "images": int(first.label.size),
                        "runs_a": len(a), "runs_b": len(b), "boot": boot, "mcnemar": tests})
    return out


def _subset_words(fingerprint: dict[str, Any]) -> str:
    return (f"{fingerprint.get('n_samples')} images, {fingerprint.get('subset')}, eval_seed "
            f"{fingerprint.get('eval_seed')}, indices {str(fingerprint.get('indices_sha256'))[:12]}")


def paired_table(comparisons: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    """Markdown cells and CSV records of :func:`paired_comparisons` (differences in points)."""
    header = ["Evaluation", "A", "B", "Images", "Runs A/B", "Δ Avg Rob acc (A−B) [95% CI]",
              "Δ Worst Rob acc (A−B) [95% CI]", "McNemar: only A / only B, p"]
    rows, records = [], []
    for c in comparisons:
        cells = [f"{100 * c['boot'][k]['diff']:+.2f} [{100 * c['boot'][k]['low']:+.2f}, {100 * c['boot'][k]['high']:+.2f}]"
                 for k in ("avg", "worst")]
        seeds = len(c["mcnemar"]) > 1 or c["runs_a"] > 1 or c["runs_b"] > 1
        tests = "; ".join((f"seed {t['seed_a']}" + (f"/{t['seed_b']}" if t["seed_b"] != t["seed_a"] else "") + ": "
                           if seeds else "") + f"{t['only_a']}/{t['only_b']}, p={t['p']:.3g}" for t in c["mcnemar"])
        rows.append([c["attack"], c["a"], c["b"], str(c["images"]), f"{c['runs_a']}/{c['runs_b']}", *cells, tests])
        record = {"evaluation": c["attack"], "a": c["a"], "b": c["b"], "images": c["images"],
                  "runs_a": c["runs_a"], "runs_b": c["runs_b"]}
        for k in ("avg", "worst"):
            record.update({f"rob_{k}_acc_diff": c["boot"][k]["diff"], f"rob_{k}_acc_diff_low": c["boot"][k]["low"],
                           f"rob_{k}_acc_diff_high": c["boot"][k]["high"]})
        record["mcnemar"] = ";".join(f"{t['seed_a']}/{t['seed_b']}:{t['only_a']}/{t['only_b']}:{t['p']:.6g}"
                                     for t in c["mcnemar"])
        records.append(record)
    return header, rows, records


def study_wall_seconds(groups: Sequence[Group]) -> tuple[float, int, int]:
    """(seconds, runs with a recorded wall time, runs): every run's training, validation and test
    wall time plus every evaluation's, summed over the report's runs."""
    runs = [r for g in groups for r in g.runs]
    timed = [r for r in runs if r.metrics.get("wall_seconds")]
    total = sum(sum(r.metrics["wall_seconds"].values()) for r in timed)
    total += sum(float(e.get("seconds", 0.0)) for r in runs for e in r.evals.values())
    return total, len(timed), len(runs)


def analyses(groups: Sequence[Group]) -> list[tuple[str, dict[str, Any]]]:
    """(group label, analysis.json) for each group with a ``batlit.analyze`` result under its first
    analysed run (``<run>/analysis/analysis.json``)."""
    out = []
    for g in groups:
        for r in g.runs:
            path = r.path / "analysis" / "analysis.json"
            if path.is_file():
                out.append((g.label, _read_json(path, r.path)))
                break
    return out


def analysis_table(found: Sequence[tuple[str, dict[str, Any]]]) -> str:
    header = ["Method", "Mean steps to first misclassification", "Never misclassified (%)", "Target KL to uniform",
              "Target TV to uniform", "Most frequent target"]
    rows = []
    for label, a in found:
        dist, names = a["target"]["target_distribution"], a["class_names"]
        top = max(range(len(dist)), key=dist.__getitem__)
        rows.append([label, f"{a['source']['mean_steps']:.1f}", f"{100 * a['source']['never_misclassified']:.1f}",
                     f"{a['target']['kl_to_uniform']:.3f}", f"{a['target']['tv_to_uniform']:.3f}",
                     f"{names[top]} ({100 * dist[top]:.1f}%)"])
    return markdown(header, rows)


def plot_source_target(found: Sequence[tuple[str, dict[str, Any]]], path: Path) -> None:
    """The paper's Figure 2 for several runs side by side: the adversarial confusion matrix (target
    class), the distribution of adversarial targets, and the mean steps to the boundary per class
    (source class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(found)
    K = len(found[0][1]["class_names"])
    fig, axes = plt.subplots(3, n, figsize=(max(4.5, 0.45 * K + 1) * n, 3.6 * 3), squeeze=False)
    vmax_steps = max(max(a["source"]["mean_steps_per_class"]) for _, a in found)
    for col, (label, a) in enumerate(found):
        names, pos = a["class_names"], np.arange(K)
        conf = np.asarray(a["target"]["confusion"], dtype=float)
        conf = conf / np.clip(conf.sum(1, keepdims=True), 1, None)
        ax = axes[0][col]
        ax.imshow(conf, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{label}\nadversarial confusion (PGD-{a['target']['steps']})", fontsize=9)
        ax.set_xlabel("adversarial prediction", fontsize=8)
        ax.set_ylabel("true class", fontsize=8)
        ax = axes[1][col]
        ax.bar(pos, a["target"]["target_distribution"], color="tab:purple")
        ax.axhline(1 / K, color="black", linestyle="--", linewidth=1)
        ax.set_title(f"adversarial targets (KL to uniform {a['target']['kl_to_uniform']:.3f})", fontsize=9)
        ax = axes[2][col]
        ax.bar(pos, a["source"]["mean_steps_per_class"], color="tab:orange")
        ax.set_ylim(0, vmax_steps * 1.05)
        ax.set_title(f"source: mean steps to first misclassification ({a['source']['steps']} max)", fontsize=9)
        for ax in axes[:, col]:
            if K <= 20:
                ax.set_xticks(pos, names, rotation=45, ha="right", fontsize=7)
        if K <= 20:
            axes[0][col].set_yticks(pos, names, fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def _wilson_columns(groups: Sequence[Group], records: list[dict[str, Any]]) -> None:
    """report.csv: per group and evaluation, the images of the worst class (the fewest over its runs)
    and, for a group of one run, that class's 95% Wilson interval (worst_class.csv has every run's)."""
    sources = _sources([r for g in groups for r in g.runs])
    for g, record in zip(groups, records):
        for _, attack in sources:
            prefix = "" if attack is None else f"{attack}_"
            found = []
            for r in g.runs:
                summary = r.metrics if attack is None else r.evals.get(attack)
                names = (summary or {}).get("class_names") or r.metrics.get("class_names") or []
                found.append(worst_interval(summary, names, "rob") if summary else None)
            if any(found):
                record[f"{prefix}rob_worst_class_n"] = min(f[2] for f in found if f)
            if len(found) == 1 and found[0]:
                record[f"{prefix}rob_worst_wilson_low"], record[f"{prefix}rob_worst_wilson_high"] = found[0][3:]


def _csv_text(records: Sequence[dict[str, Any]]) -> str:
    import io

    f = io.StringIO(newline="")
    writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in records for k in r)))
    writer.writeheader()
    writer.writerows(records)
    return f.getvalue()


def report(paths: Sequence[Path], baseline: Path | None = None, out: Path | None = None,
           figures: bool = True, draws: int = 2000) -> dict[str, Any]:
    runs = find_runs(paths)
    groups = group_runs(runs)
    base_group = None
    if baseline is not None:
        base_runs = find_runs([baseline], what="--baseline")
        base_group = Group("baseline", base_runs)
    class_names = _class_names(groups)
    header, rows, records = table_rows(groups, base_group)
    if out is None:
        out = paths[0] / "report" if len(paths) == 1 else Path("outputs") / "report"
        out = check_out_dir(out, inside=paths[0] if len(paths) == 1 else None)  # not a link in the run folder
    out = check_out_dir(out)
    first = runs[0].metrics
    attack = first.get("attack") or {}
    caption = (f"{len(runs)} runs in {len(groups)} groups; errors in % (mean ± std over seeds) on "
               f"{first.get('num_test_samples', '?')} test images of {first.get('data', '?')}, "
               f"PGD-{attack.get('steps', '?')} at eps={attack.get('eps', 0):.4g}")
    if base_group is not None:
        caption += f"; ρ against {baseline} ({len(base_group.runs)} runs)"
    table = markdown(header, rows)
    noise = noise_note(runs)
    sections = [f"{caption}\n\n{table}\n" + (f"\n{noise}\n" if noise else "")]
    worst_header, worst_rows, worst_records = worst_class_rows(groups)
    _wilson_columns(groups, records)
    sections.append("\nWorst class of each run by robust error (%), with its 95% Wilson interval over that class's "
                    "n images (image sampling only; the worst of K classes is picked after the fact, so its true "
                    f"rate is if anything lower):\n\n{markdown(worst_header, worst_rows)}\n")
    comparisons = paired_comparisons(groups, base_group, draws=draws)
    paired_header, paired_rows, paired_records = paired_table(comparisons)
    paired_text = markdown(paired_header, paired_rows) if paired_rows else ""
    if paired_rows:
        sections.append("\nPaired comparisons on the same images (the evaluations' per-image files): the difference "
                        "A − B in average and worst-class robust accuracy (points) with a 95% paired bootstrap "
                        f"interval ({draws} draws of the images and, where a row has several runs, of its runs), "
                        "and McNemar's exact test per pair of runs (images robust under only A / only B, "
                        f"two-sided p):\n\n{paired_text}\n")
    for key, title in (("std", "standard"), ("bndy", "boundary"), ("rob", "robust")):
        sections.append(f"\nPer-class {title} error (%, mean over seeds):\n\n"
                        f"{markdown(*per_class_table(groups, key))}\n")
    state = class_state_table(groups)
    if state is not None:
        sections.append(f"\nClass-wise state at the end of training (the per-class weights, ε scales or "
                        f"multipliers of the class-wise methods; mean over seeds):\n\n{markdown(*state)}\n")
    cost_header, cost_rows, cost = cost_table(groups)
    if cost_rows:
        total, timed, n_runs = study_wall_seconds(groups)
        untimed = f"; {n_runs - timed} of the {n_runs} runs recorded no run wall time (trained before it was kept)" \
            if timed < n_runs else ""
        sections.append(f"\nCost: training time per epoch (perf/epoch_seconds of each run's csv/metrics.csv, over all "
                        f"epochs of a row's runs), each run's wall time with its validation and test (metrics.json "
                        f"wall_seconds) and each evaluation's (eval JSON seconds), mean per run:\n\n"
                        f"{markdown(cost_header, cost_rows)}\n\nWall time of all {n_runs} runs and their evaluations: "
                        f"{total / 3600:.2f} h{untimed}.\n")
    for record in records:
        record.update(cost.get(record["method"], {}))
    found = analyses(groups)
    if found:
        sections.append(f"\nSource- and target-class analysis (batlit.analyze):\n\n{analysis_table(found)}\n")
    atomic_write_text(out / "report.md", "".join(sections))  # a link there is replaced, never followed
    with atomic_text_writer(out / "report.csv") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in records for k in r)))
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in r.items()} for r in records)
    written = [out / "report.md", out / "report.csv"]
    for name, extra in (("worst_class.csv", worst_records), ("paired.csv", paired_records)):
        if extra:
            atomic_write_text(out / name, _csv_text(extra))
            written.append(out / name)
    if figures and class_names is None:
        print("Figures skipped: the runs have different classes (the tables line them up by name)")
    elif figures:
        plot_per_class(groups, class_names, out / "per_class_errors.png")
        plot_clean_vs_robust(groups, class_names, out / "clean_vs_robust.png")
        written += [out / "per_class_errors.png", out / "clean_vs_robust.png"]
        if found:
            plot_source_target(found, out / "source_target_classes.png")
            written.append(out / "source_target_classes.png")
    return {"caption": caption, "table": table, "records": records, "written": written, "paired": paired_text,
            "comparisons": paired_records}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batlit.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="training runs or folders above them (Hydra multirun directories)")
    parser.add_argument("--baseline", type=Path, help="run (or folder of seeds) the ρ columns compare against")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/report, or outputs/report)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        result = report(args.runs, args.baseline, args.out, figures=not args.no_figures)
    except (ReportError, ConfigError) as err:
        print(f"batlit: config error: {printable(str(err))}", file=sys.stderr)
        return 2
    print(printable(result["caption"]))  # names from run folders: no escape sequences reach the terminal
    print()
    print(printable(result["table"]))
    if result["paired"]:
        print("\nPaired comparisons on the same images (Δ robust accuracy A − B in points, 95% bootstrap interval; "
              "McNemar's exact test):\n")
        print(result["paired"])
    print(f"\nOutputs written to {result['written'][0].parent}")
    for path in result["written"]:
        print(f"  {path}")
    return 0

