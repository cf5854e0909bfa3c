"""The fast path's speed-up over the plain algorithm, over several bench processes.

One ``python -m batlit.bench ... baseline=true`` run times the defaults and fp32 (contiguous,
BatchNorm unfolded) step by step in turns, so drift within a run slows both alike. Between
processes this 2-core VM still moves the ratio by ±20% (docs/performance.md), so a single run is
one sample: this script runs the same bench ``--rounds`` times, each in a fresh process, and
reports every ratio with their median.

    python scripts/speedup_rounds.py --rounds 5 --out docs/bench/cpu/speedup_rounds_small_cnn16.json \\
        model=small_cnn model.width=16 'methods=[standard,pgd_at,trades,bat]'

Arguments after the options are bench overrides; ``baseline=true count_flops=false`` and a
temporary ``out=`` are added.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="bench processes to run (default 5)")
    parser.add_argument("--out", type=Path, help="JSON file for every round's ratios and their medians")
    parser.add_argument("overrides", nargs="*", help="bench overrides, e.g. model=resnet18 'methods=[pgd_at]'")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    bad = [o for o in args.overrides if o.split("=", 1)[0].lstrip("+~") in ("out", "baseline")]
    if bad:
        parser.error(f"{bad[0]!r}: this script sets out= and baseline= itself")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            out = Path(tmp) / f"round{k}.json"
            cmd = [sys.executable, "-m", "batlit.bench", *args.overrides, "baseline=true", "count_flops=false", f"out={out}"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sys.stderr.write(done.stdout + done.stderr)
                return done.returncode
            record = json.loads(out.read_text())
            if not record["fp32_contiguous"]:
                parser.error("the defaults are already fp32, contiguous and unfolded on this machine: nothing to compare")
            ratios = {name: record["fp32_contiguous"][name]["seconds_per_step"] / entry["seconds_per_step"]
                      for name, entry in record["methods"].items()}
            rounds.append({"ratios": ratios, "fast_ms": {n: 1000 * e["seconds_per_step"] for n, e in record["methods"].items()},
                           "fp32_ms": {n: 1000 * e["seconds_per_step"] for n, e in record["fp32_contiguous"].items()}})
            print(f"round {k + 1}: " + ", ".join(f"{n} {r:.2f}x" for n, r in ratios.items()), flush=True)
    medians = {name: statistics.median(r["ratios"][name] for r in rounds) for name in rounds[0]["ratios"]}
    for name, value in medians.items():
        values = [r["ratios"][name] for r in rounds]
        print(f"{name:<10} median {value:.2f}x  (min {min(values):.2f}x, max {max(values):.2f}x, {len(values)} rounds)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"overrides": args.overrides, "settings": {
            "fast": {k: record[k] for k in ("precision", "channels_last", "fold_batchnorm")},
            "device": record["device"], "batch_size": record["batch_size"], "repeats": record["repeats"],
            "torch_version": record["torch_version"]}, "rounds": rounds, "median_speedup": medians}, indent=2))
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
