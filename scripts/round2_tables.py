"""The tables of docs/results_round2.md, from a study folder of scripts/study_round2.sh.

Accuracies in % as the robust-fairness papers since 2023 give them: average and worst-class clean
accuracy and robust accuracy under AutoAttack, all four on the same AutoAttack test images (each
run's ``eval_autoattack.json``), mean ± standard deviation over the seeds found; ρ against the
baseline's means (DAFA's ρ: relative worst-class gain minus relative average loss) on the
AutoAttack accuracies. The every-method table also names each run's worst class under AutoAttack
(ties joined by "=") and counts them.

Then the cost, from the runs' own records: per method, the mean wall time of a training run with
its validation and test (metrics.json ``wall_seconds``, summed over resumed sessions), its fastest
epoch (csv/metrics.csv ``perf/epoch_seconds``), and each evaluation's seconds (eval JSONs); and the
wall time of every kept run and evaluation of the folder. Given several folders (the two scales),
it ends with the whole study's wall time.

    python scripts/round2_tables.py results/round2/small              # accuracy and cost tables
    python scripts/round2_tables.py results/round2/large --trades-only
    python scripts/round2_tables.py results/round2/small results/round2/large   # and the whole study
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import Counter
from pathlib import Path

ALL = [("standard", "standard"), ("pgd_at", "PGD-AT"), ("trades1", "TRADES(1)"), ("trades6", "TRADES(6)"),
       ("fat", "FAT"), ("gairat", "GAIRAT"), ("bat", "BAT"), ("frl", "FRL (from PGD-AT)"), ("cfa", "CFA"),
       ("wat", "WAT"), ("dafa", "DAFA"), ("faal_at", "FAAL (from PGD-AT)"), ("faal_trades", "FAAL (from TRADES(6))"),
       ("frl_trades", "FRL (from TRADES(6))")]
TRADES_BASED = [("trades6", "TRADES(6)"), ("frl_trades", "+FRL"), ("cfa", "+CFA"), ("bat", "+BAT"), ("wat", "+WAT"),
                ("dafa", "+DAFA"), ("faal_trades", "+FAAL")]
KEYS = ("std_avg", "std_worst", "rob_avg", "rob_worst")


def seeds_of(study: Path, name: str) -> list[dict]:
    """Each finished seed's AutoAttack record under study/name (FRL from PGD-AT: the τ folder chosen
    on validation, frl_choice.json)."""
    if name == "frl":
        choice = study / "frl_choice.json"
        if not choice.is_file():
            return []
        name = json.loads(choice.read_text())["chosen"]
    return [json.loads(p.read_text()) for p in sorted((study / name).glob("seed*/eval_autoattack.json"))]


def accuracies(records: list[dict]) -> dict[str, tuple[float, float | None]]:
    """Per key, (mean, sd over seeds or None for one seed) of the accuracy in %."""
    out = {}
    for key in KEYS:
        values = [100 * (1 - r[key]) for r in records]
        out[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)
    return out


def rho(acc: dict, base: dict) -> float:
    avg, worst, base_avg, base_worst = acc["rob_avg"][0], acc["rob_worst"][0], base["rob_avg"][0], base["rob_worst"][0]
    if base_avg <= 0 or base_worst <= 0:
        return math.nan
    return (worst - base_worst) / base_worst - (base_avg - avg) / base_avg


def table(study: Path, rows: list[tuple[str, str]], baseline: str, baseline_label: str,
          worst_classes: bool = False) -> str:
    """The accuracy table; with worst_classes, a last column names each seed's worst class under
    AutoAttack (classes tied at the worst joined by "=", or their number beyond three), and a line
    counts the runs each class was alone at the worst in."""
    base_records = seeds_of(study, baseline)
    base = accuracies(base_records) if base_records else None
    lines = ["| Method | Seeds | Clean avg | Clean worst | AA avg | AA worst | ρ (AA) vs " + baseline_label + " |"
             + (" AA worst class, per seed |" if worst_classes else ""),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" --- |" if worst_classes else "")]
    counts: Counter[str] = Counter()
    for name, label in rows:
        records = seeds_of(study, name)
        if not records:
            continue
        acc = accuracies(records)
        cells = [f"{m:.1f}" + (f" ± {s:.1f}" if s is not None else "") for m, s in (acc[k] for k in KEYS)]
        r = rho(acc, base) if base else math.nan
        lines.append(f"| {label} | {len(records)} | " + " | ".join(cells) + f" | {'-' if math.isnan(r) else f'{r:+.3f}'} |")
        if worst_classes:
            tied = [worst_tied(rec) for rec in records]
            counts.update(names[0] if len(names) == 1 else "tie" for names in tied)
            lines[-1] += " " + ", ".join("=".join(names) if len(names) <= 3 else f"{len(names)} tied"
                                         for names in tied) + " |"
    n = {r["n_samples"] for name, _ in rows for r in seeds_of(study, name)}
    if not n:
        return "(no run of these methods has its AutoAttack evaluation yet)"
    note = (f"\nAccuracy in % on the same {', '.join(map(str, sorted(n)))} AutoAttack test images (clean and "
            "under AutoAttack, standard version), mean ± standard deviation over seeds. ρ is undefined (-) "
            "where the baseline's worst class has no robust accuracy left.")
    if worst_classes:
        n_runs = sum(len(seeds_of(study, name)) for name, _ in rows)
        ties = counts.pop("tie", 0)
        note += (f" The worst class under AutoAttack, in how many of these {n_runs} runs: "
                 + ", ".join(f"{c} {k}" for c, k in counts.most_common())
                 + (f"; in {ties} more, several classes tie at the worst (joined by = in the table)" if ties else "")
                 + ".")
    return "\n".join(lines) + "\n" + note


def worst_tied(record: dict) -> list[str]:
    """The classes at the worst robust error of one AutoAttack record (several where they tie)."""
    errors, names = record.get("rob_per_class"), record.get("class_names")
    if not errors or not names:  # a record without its per-class errors names its worst class alone
        return [record.get("rob_worst_class", "?")]
    return [name for name, e in zip(names, errors) if e >= max(errors) - 1e-6]


def cost_rows(study: Path) -> list[tuple[str, Path]]:
    """(label, folder) of every method folder of the study, in the tables' order; FRL from PGD-AT
    once per τ (each τ was trained and evaluated)."""
    rows = []
    for name, label in ALL:
        if name == "frl":
            rows += [(f"FRL (from PGD-AT, τ {d.name.removeprefix('frl_tau')})", d)
                     for d in sorted(study.glob("frl_tau*")) if d.is_dir()]
        elif (study / name).is_dir():
            rows.append((label, study / name))
    return rows


def fastest_epoch(run: Path) -> float:
    path = run / "csv" / "metrics.csv"
    if not path.is_file():
        return math.nan
    with path.open(newline="") as f:
        times = [float(r["perf/epoch_seconds"]) for r in csv.DictReader(f) if r.get("perf/epoch_seconds")]
    return min(times, default=math.nan)


def _mean_cell(values: list[float], scale: float, spec: str) -> str:
    return format(statistics.fmean(values) / scale, spec) if values else "-"


def cost(study: Path) -> tuple[str, float, int]:
    """(markdown table, total seconds, runs) of the study folder's kept runs and evaluations."""
    lines = ["| Method | Runs | Training run (min) | Fastest epoch (s) | PGD-20 (s) | AutoAttack (s) | All runs (h) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    total, n_runs = 0.0, 0
    for label, folder in cost_rows(study):
        runs = [p.parent for p in sorted(folder.glob("seed*/metrics.json"))]
        if not runs:
            continue
        walls = [sum(w.values()) for r in runs if (w := json.loads((r / "metrics.json").read_text()).get("wall_seconds"))]
        evals = {name: [float(json.loads(p.read_text()).get("seconds", 0.0)) for r in runs
                        if (p := r / f"eval_{name}.json").is_file()] for name in ("pgd20", "autoattack")}
        spent = sum(walls) + sum(sum(v) for v in evals.values())
        epochs = [t for r in runs if not math.isnan(t := fastest_epoch(r))]
        untimed = "" if len(walls) == len(runs) else f" ({len(walls)} timed)"
        lines.append(f"| {label} | {len(runs)} | {_mean_cell(walls, 60, '.1f')}{untimed} | {_mean_cell(epochs, 1, '.1f')} | "
                     f"{_mean_cell(evals['pgd20'], 1, '.0f')} | {_mean_cell(evals['autoattack'], 1, '.0f')} | {spent / 3600:.2f} |")
        total += spent
        n_runs += len(runs)
    note = (f"\nMean per run (the fastest epoch: each run's fastest, averaged); wall times on the machine "
            f"that ran each (docs/results_round2.md says which). "
            f"Every kept run and evaluation of {study}: {total / 3600:.2f} h over {n_runs} run{'s' * (n_runs != 1)}.")
    return "\n".join(lines) + "\n" + note, total, n_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, nargs="+", help="scripts/study_round2.sh output or kept-results folders")
    parser.add_argument("--trades-only", action="store_true", help="only the TRADES-based table")
    args = parser.parse_args(argv)
    for study in args.study:
        if not (study / "protocol.txt").is_file():
            parser.error(f"{study}: not a study folder (no protocol.txt)")
    whole, whole_runs = 0.0, 0
    for i, study in enumerate(args.study):
        print(("\n" if i else "") + f"TRADES-based methods, ρ against TRADES(6) ({study}):\n")
        print(table(study, TRADES_BASED, "trades6", "TRADES(6)"))
        if not args.trades_only:
            print(f"\nEvery method, ρ against PGD-AT ({study}):\n")
            print(table(study, ALL, "pgd_at", "PGD-AT", worst_classes=True))
        text, seconds, runs = cost(study)
        print(f"\nCost ({study}):\n\n{text}")
        whole, whole_runs = whole + seconds, whole_runs + runs
    if len(args.study) > 1:
        print(f"\nThe whole study: {whole / 3600:.2f} h of wall time over {whole_runs} runs and their evaluations.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
