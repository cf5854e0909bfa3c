"""scripts/gpu_slot.sh's first and last steps: the environment, and what comes back.

    python scripts/gpu_slot_pack.py environment RESULTS/environment.json
    python scripts/gpu_slot_pack.py pack WORK OUT

``pack`` writes three files into OUT and nothing else: ``results.tar.gz`` (every JSON, CSV, YAML and
text file under WORK/results and, from WORK/runs, each run's metrics.json, config.yaml and
csv/metrics.csv; never a checkpoint, each file at most 2 MiB), ``summary.md`` (the numbers the
slot is for, as tables: steps, syncs, attack strength per precision, step benchmark, training
images/s and the per-class PGD-20 table of each short training), also printed, and
``console.log``. The device tool returns at most 8 files of at most 16 MiB from OUT.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKED_SUFFIXES = (".json", ".csv", ".yaml", ".txt", ".xml", ".log", ".md")
RUN_FILES = ("metrics.json", "config.yaml", "csv/metrics.csv")
MAX_FILE = 2 * 2**20
MAX_TAR = 15 * 2**20


def environment(path: Path) -> None:
    import torch

    info = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("lightning", "torchmetrics", "hydra-core", "omegaconf", "torchattacks", "pyautoattack", "numpy",
                 "batlit"):
        try:  # from the installed metadata: no import (the install step imported them)
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, capability=list(torch.cuda.get_device_capability(0)))
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                             "--format=csv,noheader"], capture_output=True, text=True,
                                            timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    info["cpu_count"] = os.cpu_count()
    path.write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def summary(work: Path) -> str:
    res, runs = work / "results", work / "runs"
    lines = ["# batlit GPU slot", ""]
    env = _load(res / "environment.json")
    if env:
        lines += [f"{env.get('gpu', 'no GPU')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, "
                  f"Python {env.get('python')}, lightning {env.get('lightning')}", ""]
    if (res / "steps.txt").is_file():
        lines += ["## Steps", "", "```", (res / "steps.txt").read_text().rstrip(), "```", ""]
    sync = _load(res / "sync_check.json")
    if sync:
        lines += [f"## Host syncs per training step ({sync['device']}, {sync['attack_steps']}-step attacks)", "",
                  "| method | batlit.sync | CUDA syncs |", "| --- | --- | --- |"]
        for name, entry in sync["methods"].items():
            lines.append(f"| {name} | {sum(entry['batlit.sync'].values())} {entry['batlit.sync'] or ''} | "
                         f"{entry.get('cuda', '—')} |")
        lines.append("")
    for stem, title in (("precision_probe", "the probe"), ("precision_trained", "the trained BAT")):
        check = _load(res / f"{stem}.json")
        if not check:
            continue
        lines += [f"## Attack strength per precision, {title} ({check['n_images']} images it classifies right)", "",
                  "| attack | mode | misclassified % / BAT: never misclassified %, mean steps | seconds |",
                  "| --- | --- | --- | --- |"]
        for attack, by_mode in check["attacks"].items():
            for mode, e in by_mode.items():
                shown = (f"{_pct(e['never_misclassified'])}, {e['mean_steps']:.2f}" if "mean_steps" in e
                         else _pct(e["misclassified"]))
                lines.append(f"| {attack} | {mode} | {shown} | {e['seconds']:.3f} |")
        lines.append("")
    for bench_file in sorted(res.glob("bench_b*.json"), key=lambda p: int(p.stem.split("_b")[1])):
        bench = _load(bench_file)
        if not bench:
            continue
        base = bench.get("fp32_contiguous") or {}
        lines += [f"## Step benchmark, {bench['model']} batch {bench['batch_size']} ({bench['device']})", "",
                  f"| method | {bench['precision']}{' + channels_last' if bench['channels_last'] else ''}: ms/step, "
                  "images/s | fp32 contiguous: ms/step | speed-up |", "| --- | --- | --- | --- |"]
        for name, e in bench["methods"].items():
            b = base.get(name)
            plain, ratio = ("—", "—") if not b else (f"{1000 * b['seconds_per_step']:.1f}",
                                                      f"{b['seconds_per_step'] / e['seconds_per_step']:.2f}×")
            lines.append(f"| {name} | {1000 * e['seconds_per_step']:.1f}, {e['images_per_s']:.0f} | {plain} | {ratio} |")
        lines.append("")
    for run in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else ():
        rates, seconds = [], []
        if (run / "csv" / "metrics.csv").is_file():
            with (run / "csv" / "metrics.csv").open(newline="") as f:
                for row in csv.DictReader(f):
                    if row.get("perf/train_images_per_s"):
                        rates.append(round(float(row["perf/train_images_per_s"])))
                        seconds.append(round(float(row["perf/epoch_seconds"]), 1))
        metrics = _load(run / "metrics.json")
        lines += [f"## Training {run.name}", "", f"images/s per epoch {rates}, seconds per epoch {seconds}"]
        if metrics:
            lines += [f"fit {metrics.get('wall_seconds')}, fast paths {metrics.get('fast_paths')}, "
                      f"PGD-{metrics['attack']['steps']} on {metrics['num_test_samples']} test images", "",
                      "| class | std % | bndy % | rob % |", "| --- | --- | --- | --- |"]
            for i, name in enumerate(metrics["class_names"]):
                lines.append(f"| {name} | {_pct(metrics['std_per_class'][i])} | {_pct(metrics['bndy_per_class'][i])} | "
                             f"{_pct(metrics['rob_per_class'][i])} |")
            lines.append(f"| avg / worst | {_pct(metrics['std_avg'])} / {_pct(metrics['std_worst'])} | "
                         f"{_pct(metrics['bndy_avg'])} / {_pct(metrics['bndy_worst'])} | "
                         f"{_pct(metrics['rob_avg'])} / {_pct(metrics['rob_worst'])} |")
        else:
            lines.append("no metrics.json: the run did not finish (its log is logs/train_*.txt in results.tar.gz)")
        lines.append("")
    return "\n".join(lines) + "\n"


def _packed(work: Path) -> list[tuple[Path, str]]:
    """(file, name in the archive): the small text files, never a checkpoint."""
    files = [(p, str(p.relative_to(work))) for p in sorted((work / "results").rglob("*"))
             if p.is_file() and not p.is_symlink() and p.suffix in PACKED_SUFFIXES]
    runs = work / "runs"
    for run in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else ():
        files += [(run / name, f"runs/{run.name}/{name}") for name in RUN_FILES
                  if (run / name).is_file() and not (run / name).is_symlink()]
    return [(p, name) for p, name in files if p.stat().st_size <= MAX_FILE]


def _write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp made it 0600
    os.replace(tmp, path)


def pack(work: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = summary(work)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, name in _packed(work):
            if buffer.tell() > MAX_TAR:  # stays under the 16 MiB a returned file may have
                break
            tar.add(path, arcname=f"results/{name}", recursive=False)
    _write(out / "results.tar.gz", buffer.getvalue())
    _write(out / "summary.md", text.encode("utf-8"))
    console = work / "console.log"
    if console.is_file():
        _write(out / "console.log", console.read_bytes()[-MAX_FILE:])
    print(text)


def main(argv: list[str]) -> None:
    if argv[:1] == ["environment"] and len(argv) == 2:
        environment(Path(argv[1]))
    elif argv[:1] == ["pack"] and len(argv) == 3:
        pack(Path(argv[1]), Path(argv[2]))
    else:
        sys.exit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main(sys.argv[1:])
