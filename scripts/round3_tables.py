"""The accuracy and cost tables of docs/results_round3.md, from study round 3's kept folder.

Study round 2's table code (scripts/round2_tables.py: mean ± sd over seeds, ρ, the worst class per
seed, the fastest epoch), on round 3's runs and its two evaluations:

- under the original AutoAttack, on the subset shared by every run (each run's eval_autoattack.json):
  clean and robust accuracy, average and worst class, ρ against TRADES(6) and against PGD-AT;
- under PGD-20 on the full 10,000 test images (eval_pgd20.json), the same columns;
- the cost: per method, the mean wall time of a training run (metrics.json wall_seconds, with its
  validation and test, summed over resumed sessions), its fastest epoch, each evaluation's seconds
  (a resumed evaluation's include the stopped sessions'), and all its runs together; then the whole
  study.

    python scripts/round3_tables.py results/round3
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from round2_tables import KEYS, _mean_cell, accuracies, fastest_epoch, rho, worst_tied

ROWS = [("pgd_at", "PGD-AT"), ("trades6", "TRADES(6)"), ("frl_trades", "+FRL"), ("cfa", "+CFA"),
        ("cfa_fawa", "+CFA, FAWA threshold 0.04 (batlit's choice)"), ("bat", "+BAT"), ("wat", "+WAT"),
        ("dafa", "+DAFA"), ("faal_trades", "+FAAL")]
ATTACKS = {"autoattack": "the original AutoAttack (standard version)", "pgd20": "PGD-20"}


def records(study: Path, name: str, attack: str) -> list[dict]:
    """Each kept seed's eval_<attack>.json under study/name, in seed order."""
    return [json.loads(p.read_text()) for p in sorted((study / name).glob(f"seed*/eval_{attack}.json"))]


def table(study: Path, attack: str) -> str:
    base = {b: accuracies(r) for b in ("trades6", "pgd_at") if (r := records(study, b, attack))}
    lines = ["| Method | Seeds | Clean avg | Clean worst | Robust avg | Robust worst | ρ vs TRADES(6) | ρ vs PGD-AT "
             "| Worst robust class, per seed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    sizes = set()
    for name, label in ROWS:
        recs = records(study, name, attack)
        if not recs:
            continue
        sizes |= {r["n_samples"] for r in recs}
        acc = accuracies(recs)
        cells = [f"{m:.1f}" + (f" ± {s:.1f}" if s is not None else "") for m, s in (acc[k] for k in KEYS)]
        rhos = [rho(acc, base[b]) if b in base else math.nan for b in ("trades6", "pgd_at")]
        worst = ", ".join("=".join(n) if len(n) <= 3 else f"{len(n)} tied" for n in map(worst_tied, recs))
        lines.append(f"| {label} | {len(recs)} | " + " | ".join(cells) + " | "
                     + " | ".join("-" if math.isnan(r) else f"{r:+.3f}" for r in rhos) + f" | {worst} |")
    if not sizes:
        return f"(no kept run has its {attack} evaluation yet)"
    return "\n".join(lines) + (f"\n\nAccuracy in % on the same {', '.join(map(str, sorted(sizes)))} test images "
                               f"(clean and under {ATTACKS[attack]}), mean ± sd over seeds; ρ (average-robust "
                               "trade-off, round 2's definition) on the robust accuracies, - where the baseline's "
                               "worst class keeps no image.")


def cost(study: Path) -> tuple[str, float, int]:
    """(markdown table, total seconds, runs) of the kept runs and their evaluations."""
    lines = ["| Method | Runs | Training run (min) | Fastest epoch (s) | PGD-20 (s) | AutoAttack (s) | All runs (h) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    total, n_runs = 0.0, 0
    for name, label in ROWS:
        runs = [p.parent for p in sorted((study / name).glob("seed*/metrics.json"))]
        if not runs:
            continue
        walls = [sum(w.values()) for r in runs if (w := json.loads((r / "metrics.json").read_text()).get("wall_seconds"))]
        evals = {a: [float(json.loads(p.read_text()).get("seconds", 0.0)) for r in runs
                     if (p := r / f"eval_{a}.json").is_file()] for a in ATTACKS}
        spent = sum(walls) + sum(sum(v) for v in evals.values())
        epochs = [t for r in runs if not math.isnan(t := fastest_epoch(r))]
        lines.append(f"| {label} | {len(runs)} | {_mean_cell(walls, 60, '.1f')} | {_mean_cell(epochs, 1, '.1f')} | "
                     f"{_mean_cell(evals['pgd20'], 1, '.0f')} | {_mean_cell(evals['autoattack'], 1, '.0f')} | "
                     f"{spent / 3600:.2f} |")
        total += spent
        n_runs += len(runs)
    note = (f"\nMean per run; FRL's and FAAL's training is their fine-tuning alone (their base is TRADES(6)'s "
            f"row). The whole study, every kept run with its evaluations: {total / 3600:.2f} h over {n_runs} "
            f"run{'s' * (n_runs != 1)}, wall time on the machine that ran each.")
    return "\n".join(lines) + "\n" + note, total, n_runs


def study_folder(argv: list[str] | None, description: str | None) -> Path:
    """The one argument of the round-3 scripts: scripts/study_round3.sh's kept-results folder."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="scripts/study_round3.sh's kept-results folder")
    study = parser.parse_args(argv).study
    if not (study / "protocol.txt").is_file():
        parser.error(f"{study}: not a study folder (no protocol.txt)")
    return study


def main(argv: list[str] | None = None) -> int:
    study = study_folder(argv, __doc__)
    print(f"Under the original AutoAttack, on the shared subset ({study}):\n\n{table(study, 'autoattack')}")
    print(f"\nUnder PGD-20, on the full test split ({study}):\n\n{table(study, 'pgd20')}")
    print(f"\nCost ({study}):\n\n{cost(study)[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
