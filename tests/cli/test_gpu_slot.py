"""scripts/gpu_slot.sh: one GPU command of at most 8 minutes that installs, checks,
measures, trains briefly and brings back at most 3 small files. Checked here without a GPU: the
steps' timeouts add up to at most 480 s, only the pack step writes into $OUT, the pack takes no
checkpoint, the wheels can be slimmed and installed --target, trainer.max_time ends a training
that still tests, and (slow) the whole script runs on the CPU as a dry run on JPEG zips made here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, TINY, run_cli

SCRIPT = ROOT / "scripts" / "gpu_slot.sh"
LIMIT = 480  # seconds: 8 minutes of the device tool's 10-minute command


def _plans() -> dict[str, list[tuple[str, int]]]:
    """Each plan function's steps as written: ``step NAME SECONDS ...`` lines, in order."""
    plans, current = {}, None
    for line in SCRIPT.read_text().splitlines():
        if m := re.match(r"^plan_(\w+)\(\) \{", line):
            current = plans.setdefault(m.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None and (m := re.match(r"^\s+step (\w+) (\d+) ", line)):
            current.append((m.group(1), int(m.group(2))))
    return plans


def test_each_plans_step_timeouts_add_up_to_at_most_8_minutes():
    plans = _plans()
    assert set(plans) == {"slot", "bench"}
    for name, steps in plans.items():
        assert sum(secs for _, secs in steps) <= LIMIT, (name, steps)
        assert len({s for s, _ in steps}) == len(steps) and steps[-1][0] == "pack"
    assert [s for s, _ in plans["slot"]][:2] == ["install", "environment"]
    assert {"train_pgd_at", "train_trades6", "train_bat", "precision_trained", "cuda_tests", "sync_check",
            "precision_probe", "bench_small", "bench_large"} <= {s for s, _ in plans["slot"]}
    text = SCRIPT.read_text()
    assert "BUDGET=${BUDGET:-480}" in text  # and the runner caps every step by what is left of it
    # every step line runs under the runner (and so under `timeout`): no command outside a step
    body = re.findall(r"^plan_\w+\(\) \{\n(.*?)^\}", text, flags=re.S | re.M)
    for block in body:
        for line in block.splitlines():
            assert re.match(r"^\s+(step \w+ \d+ |#|\S.*\\$)", line) or line.startswith("      "), line


def test_only_the_pack_step_writes_into_out_and_runs_stay_in_the_work_folder():
    text = SCRIPT.read_text()
    for line in text.splitlines():
        if "$OUT" in line and not line.lstrip().startswith("#"):
            allowed = ("OUT=${OUT:?", 'mkdir -p "$RES/logs" "$RUNS" "$SITE" "$OUT"', "step pack 10 ", "== done in")
            assert any(a in line for a in allowed), line
    runs = re.findall(r"hydra\.run\.dir=(\S+)", text)
    assert runs and all(r.startswith('"$RUNS/') for r in runs)
    assert all(o.startswith('"$RES/') for o in re.findall(r"--out (\S+)", text) + re.findall(r" out=(\S+)", text))


def _fake_work(work: Path) -> None:
    (work / "results" / "logs").mkdir(parents=True)
    (work / "results" / "steps.txt").write_text("install            rc 0      1.0 s of  30 s\n")
    (work / "results" / "logs" / "install.txt").write_text("installed\n")
    (work / "results" / "big.log").write_bytes(b"x" * (3 * 2**20))  # over the 2 MiB a packed file may have
    run = work / "runs" / "bat"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (run / "config.yaml").write_text("seed: 0\n")
    names = ["airplane", "automobile"]
    (run / "metrics.json").write_text(json.dumps({
        "attack": {"steps": 20}, "num_test_samples": 10, "class_names": names, "wall_seconds": {"fit": 1.0},
        "fast_paths": {}, **{f"{m}_per_class": [0.25, 0.5] for m in ("std", "bndy", "rob")},
        **{f"{m}_{k}": 0.5 for m in ("std", "bndy", "rob") for k in ("avg", "worst")}}))
    (work / "console.log").write_text("console\n")


def test_pack_brings_back_three_small_files_and_no_checkpoint(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    _fake_work(work)
    proc = subprocess.run([sys.executable, "scripts/gpu_slot_pack.py", "pack", str(work), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["console.log", "results.tar.gz", "summary.md"]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert "results/runs/bat/metrics.json" in names and "results/results/logs/install.txt" in names
    assert not any(n.endswith((".ckpt", ".pt")) or "big.log" in n for n in names)
    summary = (out / "summary.md").read_text()
    assert "| airplane | 25.0 | 25.0 | 25.0 |" in summary and "## Training bat" in summary
    assert summary in proc.stdout  # printed too: the device tool's output tail shows it


def _wheel(path: Path) -> Path:
    wheel = path / "demo-1.0-py3-none-any.whl"
    files = {"demo/__init__.py": b"VALUE = 3\n", "demo/examples/model.pt": b"0" * 4096,
             "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
             "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},,{len(d)}\n" for n, d in files.items()) + "demo-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("demo-1.0.dist-info/RECORD", record)
    return wheel


def test_a_slimmed_wheel_drops_the_folder_and_its_record_lines_and_still_installs(tmp_path):
    wheel = _wheel(tmp_path)
    proc = subprocess.run([sys.executable, "scripts/slim_wheel.py", str(wheel), "--drop", "demo/examples/"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(wheel) as z:
        assert not any("examples" in n for n in z.namelist())
        assert "examples" not in z.read("demo-1.0.dist-info/RECORD").decode()
        assert z.read("demo/__init__.py") == b"VALUE = 3\n"
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=120)
    assert (site / "demo" / "__init__.py").is_file() and not (site / "demo" / "examples").exists()
    again = subprocess.run([sys.executable, "scripts/slim_wheel.py", str(wheel), "--drop", "demo/examples/"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "nothing under 'demo/examples/'" in again.stderr


def test_max_time_ends_training_and_the_run_still_tests(tmp_path):
    """The slot's trainings end at FIT_TIME (trainer.max_time, kept by batlit's own Timer: Lightning
    ignores Trainer(max_time) beside a Timer) with a checkpoint and the test evaluation."""
    proc = run_cli("batlit.train", *TINY, "epochs=500", "+trainer.max_time=00:00:00:02", "estimate_cost=false",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["wall_seconds"]["fit"] < 10 and "rob_per_class" in metrics
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_an_unknown_plan_is_one_line(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT)], env={**os.environ, "OUT": str(tmp_path), "PLAN": "all"},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.strip() == "PLAN must be slot or bench, got 'all'"
    assert list(tmp_path.iterdir()) == []


def make_cifar_like_zips(root: Path, train_per_class: int = 6, test_per_class: int = 3) -> Path:
    """train.zip and test.zip in the CIFAR-10 JPEG copy's layout (split/class/NNNN.jpg), 32x32 noise."""
    import io

    import numpy as np
    from PIL import Image

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        with zipfile.ZipFile(root / f"{split}.zip", "w", zipfile.ZIP_STORED) as z:
            for c, name in enumerate(classes):
                for i in range(n):
                    image = (rng.random((32, 32, 3)) * 64 + c * 19).astype("uint8")
                    buffer = io.BytesIO()
                    Image.fromarray(image).save(buffer, format="JPEG")
                    z.writestr(f"{split}/{name}/{i:04d}.jpg", buffer.getvalue())
    return root


@pytest.mark.slow  # every step of the slot, tiny and on the CPU: about 3 minutes on 2 cores
def test_the_slot_runs_as_a_dry_run_on_the_cpu(tmp_path):
    data = make_cifar_like_zips(tmp_path / "zips")
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "WORK": str(work), "DRY": "1", "DATA_DIR": str(data),
           "PYTHON": sys.executable, "TIME_SCALE": "3", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    steps = (work / "results" / "steps.txt").read_text()
    assert proc.returncode == 0, steps + proc.stdout[-4000:]
    assert [line.split()[0] for line in steps.splitlines()] == [s for s, _ in _plans()["slot"]]
    assert all(" rc 0 " in line for line in steps.splitlines()), steps
    assert sorted(p.name for p in out.iterdir()) == ["console.log", "results.tar.gz", "summary.md"]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert not any(n.endswith((".ckpt", ".pt", ".npz")) for n in names)
    for name in ("sync_check.json", "precision_probe.json", "precision_trained.json", "bench_b16.json",
                 "bench_b32.json", "environment.json", "cuda_tests.xml"):
        assert f"results/results/{name}" in names, name
    for run in ("pgd_at", "trades6", "bat"):
        assert f"results/runs/{run}/metrics.json" in names
        metrics = json.loads((work / "runs" / run / "metrics.json").read_text())
        assert metrics["num_test_samples"] == 30 and metrics["class_names"][0] == "airplane"  # the carried zips
        assert metrics["experiment"] == f"{run}_cifar10"
    trained = json.loads((work / "results" / "precision_trained.json").read_text())
    assert trained["model"].endswith("runs/bat/checkpoints/last.ckpt")
    summary = (out / "summary.md").read_text()
    assert "## Training trades6" in summary and "| airplane |" in summary and "## Host syncs" in summary


def test_no_script_installs_into_the_images_own_python():
    """Every pip install in the GPU scripts is --no-deps into a --target folder (torchattacks pins
    requests~=2.25.1: with its dependencies pip replaces the image's requests, or stops the run)."""
    installs = []
    for script in sorted((ROOT / "scripts").glob("*.sh")):
        text = script.read_text().replace("\\\n", " ")
        installs += [(script.name, line) for line in text.splitlines()
                     if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs and {name for name, _ in installs} == {"gpu_slot_install.sh"}
    assert all("--no-deps" in line and "--target" in line and "--no-index" in line for _, line in installs)
    study = (ROOT / "scripts" / "study_cifar10_gpu.sh").read_text()
    assert "bash scripts/gpu_slot_install.sh" in study and "gpu_slot_install.sh" in SCRIPT.read_text()
