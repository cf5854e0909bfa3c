"""What CFA's FAWA did in a study's kept CFA runs, and the threshold study round 3's variant uses.

FAWA (fairness-aware weight averaging, Wei et al. CVPR 2023; PKU-ML/CFA train.py) takes the trained
model into its weight average after an epoch only when the model's worst-class robust accuracy on the
validation split is at least a threshold (the authors' 0.24 for TRADES). batlit logs that accuracy
each epoch (csv/metrics.csv: ``cfa/fawa_worst_val_robust_acc``, and ``cfa/fawa_started``). This prints,
per kept CFA run: whether FAWA ever started, the highest worst-class validation robust accuracy the
trained model reached, the epoch it did, and the value at the last epoch.

The rule for round 3's variant (conf/experiment/study3_cfa_fawa.yaml, batlit's choice, not the
authors'): the threshold is the LOWEST last-epoch value over the runs given, so that every run of
the same protocol reaches it by its end (FAWA measures the trained model, which FAWA does not change,
so a run with the same seed follows the same trajectory).

    python scripts/round3_fawa.py results/round2/large/cfa
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

COLUMN, STARTED = "cfa/fawa_worst_val_robust_acc", "cfa/fawa_started"


def fawa_record(run: Path) -> dict:
    """Per epoch (0-based), the logged worst-class validation robust accuracy of one run's CSV."""
    path = run / "csv" / "metrics.csv"
    values: dict[int, float] = {}
    started = False
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get(COLUMN):
                values[int(row["epoch"])] = float(row[COLUMN])
            if row.get(STARTED):
                started = started or float(row[STARTED]) > 0
    if not values:
        raise SystemExit(f"round3_fawa: {path} logs no {COLUMN} (not a CFA run with FAWA?)")
    best = max(values, key=lambda e: (values[e], -e))  # the first epoch at the highest value
    last = max(values)
    return {"run": run.name, "started": started, "max": values[best], "max_epoch": best + 1,
            "last": values[last], "epochs": last + 1}


def threshold(records: list[dict]) -> float:
    """The lowest last-epoch worst-class validation robust accuracy, rounded to the 1/100 a class of
    100 validation images resolves (down, so that the run that set it reaches it)."""
    return int(min(r["last"] for r in records) * 100 + 1e-6) / 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cfa", type=Path, help="a kept CFA method folder (seed*/csv/metrics.csv inside)")
    args = parser.parse_args(argv)
    runs = sorted(p for p in args.cfa.glob("seed*") if (p / "csv" / "metrics.csv").is_file())
    if not runs:
        parser.error(f"{args.cfa}: no seed*/csv/metrics.csv")
    records = [fawa_record(r) for r in runs]
    print(f"FAWA in {args.cfa}: the trained model's worst-class robust accuracy on the validation split\n")
    print("| Run | FAWA started | Highest (epoch) | Last epoch |")
    print("| --- | --- | ---: | ---: |")
    for r in records:
        print(f"| {r['run']} | {'yes' if r['started'] else 'no'} | {100 * r['max']:.0f}% ({r['max_epoch']} of "
              f"{r['epochs']}) | {100 * r['last']:.0f}% |")
    print(f"\nThe threshold every run reached by its last epoch (the lowest last-epoch value): {threshold(records):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
