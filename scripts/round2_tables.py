"""The tables of docs/results_round2.md, from a study folder of scripts/study_round2.sh.

Accuracies in % as the robust-fairness papers since 2023 give them: average and worst-class clean
accuracy and robust accuracy under AutoAttack, all four on the same AutoAttack test images (each
run's ``eval_autoattack.json``), mean ± standard deviation over the seeds found; ρ against the
baseline's means (DAFA's ρ: relative worst-class gain minus relative average loss) on the
AutoAttack accuracies.

    python scripts/round2_tables.py outputs/study_round2_small            # both tables
    python scripts/round2_tables.py outputs/study_round2_large --trades-only
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
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


def table(study: Path, rows: list[tuple[str, str]], baseline: str, baseline_label: str) -> str:
    base_records = seeds_of(study, baseline)
    base = accuracies(base_records) if base_records else None
    lines = ["| Method | Seeds | Clean avg | Clean worst | AA avg | AA worst | ρ (AA) vs " + baseline_label + " |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, label in rows:
        records = seeds_of(study, name)
        if not records:
            continue
        acc = accuracies(records)
        cells = [f"{m:.1f}" + (f" ± {s:.1f}" if s is not None else "") for m, s in (acc[k] for k in KEYS)]
        r = rho(acc, base) if base else math.nan
        lines.append(f"| {label} | {len(records)} | " + " | ".join(cells) + f" | {'-' if math.isnan(r) else f'{r:+.3f}'} |")
    n = {r["n_samples"] for name, _ in rows for r in seeds_of(study, name)}
    if not n:
        return "(no run of these methods has its AutoAttack evaluation yet)"
    note = (f"\nAccuracy in % on the same {', '.join(map(str, sorted(n)))} AutoAttack test images (clean and "
            "under AutoAttack, standard version), mean ± standard deviation over seeds. ρ is undefined (-) "
            "where the baseline's worst class has no robust accuracy left.")
    return "\n".join(lines) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a scripts/study_round2.sh output folder")
    parser.add_argument("--trades-only", action="store_true", help="only the TRADES-based table")
    args = parser.parse_args(argv)
    if not (args.study / "protocol.txt").is_file():
        parser.error(f"{args.study}: not a study folder (no protocol.txt)")
    print(f"TRADES-based methods, ρ against TRADES(6) ({args.study}):\n")
    print(table(args.study, TRADES_BASED, "trades6", "TRADES(6)"))
    if not args.trades_only:
        print(f"\nEvery method, ρ against PGD-AT ({args.study}):\n")
        print(table(args.study, ALL, "pgd_at", "PGD-AT"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
