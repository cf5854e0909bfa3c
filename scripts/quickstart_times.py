"""Wall time of each class-wise method on the quickstart against PGD-AT's (issue 19: at most 2x).

    python scripts/quickstart_times.py [--rounds 2] [--out results/quickstart/quickstart_times.md]

Each method trains ``experiment=quickstart`` (digits, small_cnn, 15 epochs, CPU) with ``test=false``,
in rounds that interleave the methods so that a slow spell of a shared machine hits all of them;
the time is the whole ``python -m batlit.train`` process (start-up and data included, as a user
waits for it). FAAL fine-tunes the first PGD-AT run's checkpoint for the same 15 epochs; DAFA's
warm-up ends at epoch 10 (its default, 70, is beyond the quickstart's epochs). The ratio is each
method's median over rounds divided by PGD-AT's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = {
    "pgd_at": ["method=pgd_at"],
    "trades": ["method=trades"],
    "cfa": ["method=cfa"],
    "wat": ["method=wat"],
    "dafa": ["method=dafa", "method.warmup_epoch=10"],
    "faal": ["method=faal"],
    "frl_rwrm": ["method=frl_rwrm"],
}


def run(name: str, overrides: list[str], run_dir: Path) -> float:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "batlit.train", "experiment=quickstart", "test=false",
                           "trainer.enable_progress_bar=false", "estimate_cost=false", *overrides,
                           f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "quickstart" / "quickstart_times.md")
    args = parser.parse_args()
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        hot = Path(tmp) / "hot_start"
        run("hot start", METHODS["pgd_at"], hot)  # FAAL's and FRL's init_ckpt (not timed)
        ckpt = hot / "checkpoints" / "last.ckpt"
        for r in range(args.rounds):
            for name, overrides in METHODS.items():
                extra = [f"method.init_ckpt={ckpt}"] if name in ("faal", "frl_rwrm") else []
                extra += ["method.allow_val_overlap=true"] if name == "frl_rwrm" else []
                times[name].append(run(name, overrides + extra, Path(tmp) / f"{name}_{r}"))
                print(f"round {r}: {name} {times[name][-1]:.1f} s", flush=True)
    base = statistics.median(times["pgd_at"])
    rows = [f"| {name} | {statistics.median(t):.1f} | {', '.join(f'{v:.1f}' for v in t)} | "
            f"{statistics.median(t) / base:.2f} |" for name, t in times.items()]
    text = (f"Quickstart wall time per method (`python scripts/quickstart_times.py --rounds {args.rounds}`; "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
            f"{__import__('torch').__version__}):\n\n"
            "| method | median s | rounds | × PGD-AT |\n|---|---:|---|---:|\n" + "\n".join(rows) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(times, indent=2))
    print(text)


if __name__ == "__main__":
    main()
