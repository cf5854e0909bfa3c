"""Keep a finished study run's small result files in the repository, so a study outlives the machine.

A study's run folders (checkpoints, logs) live under outputs/, which no session keeps. This copies
what the reports read, and nothing else, into a tracked folder:

    metrics.json  config.yaml  csv/metrics.csv  eval_*.json

Absolute paths of this machine inside them (the repository root, the study folder) are rewritten as
paths relative to the repository, so the kept files name no machine. A run already kept is not
overwritten: its test metrics are compared with the new copy's instead (a base model retrained on
the CPU to fine-tune from must reproduce the kept one), and the comparison is printed.

    python scripts/keep_results.py outputs/study_round2_small/pgd_at/seed0 docs/results/round2/small/pgd_at/seed0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("metrics.json", "config.yaml", "csv/metrics.csv")  # the CSV: per-epoch times for the cost table
COMPARED = ("std_per_class", "rob_per_class", "bndy_per_class")


def relative_text(text: str, roots: list[Path]) -> str:
    """text with each absolute root (longest first) replaced by its path relative to the repository."""
    for root in sorted((r for r in roots if len(r.parts) > 1), key=lambda p: len(str(p)), reverse=True):
        try:
            rel = root.relative_to(ROOT).as_posix() or "."
        except ValueError:
            rel = root.name
        text = text.replace(str(root), rel)
    return text


def keep(src: Path, dst: Path) -> str:
    src, dst = src.resolve(), dst.resolve()
    if not (src / "metrics.json").is_file():
        raise SystemExit(f"keep_results: no metrics.json in '{src}'")
    roots = [ROOT, src.parent.parent]  # the repository, and the study folder (OUT/METHOD/seedN) wherever it is
    if (dst / "metrics.json").is_file():
        kept = json.loads((dst / "metrics.json").read_text())
        new = json.loads((src / "metrics.json").read_text())
        same = all(kept.get(k) == new.get(k) for k in COMPARED)
        verdict = "reproduced" if same else "DIFFERS from"
        # the new model's files join the kept ones only when it is the kept model, and never replace one
        names = [n for n in [*KEPT, *(p.name for p in sorted(src.glob("eval_*.json")))]
                 if same and (src / n).is_file() and not (dst / n).is_file()]
    else:
        verdict = "kept"
        names = [n for n in KEPT if (src / n).is_file()] + [p.name for p in sorted(src.glob("eval_*.json"))]
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        (dst / name).write_text(relative_text((src / name).read_text(), roots))
    shown = dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst
    if verdict == "kept" or not names:
        return f"{verdict} {shown}"
    return f"kept {shown} (+{', '.join(names)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a finished run folder (metrics.json inside)")
    parser.add_argument("dst", type=Path, help="the tracked folder to keep it in")
    args = parser.parse_args(argv)
    print(keep(args.src, args.dst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
