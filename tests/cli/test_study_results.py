"""A study outlives the machine: scripts/keep_results.py and study_common.sh's kept-run logic.

The study scripts train for hours; a session ends and its outputs/ with it. What the reports read is
kept in a tracked folder, so the next session resumes where the last one stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

KEEP = [sys.executable, str(ROOT / "scripts" / "keep_results.py")]


def _run_dir(out: Path, name: str, rob: list[float]) -> Path:
    """A finished run as batlit.train and batlit.evaluate leave it, absolute paths included."""
    run = out / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"rob_per_class": rob, "std_per_class": [0.5, 0.5],
                                                  "bndy_per_class": [r - 0.5 for r in rob]}))
    (run / "config.yaml").write_text(f"data:\n  root: {ROOT}/data/cifar10\ntrainer:\n  default_root_dir: {run}\n")
    (run / "eval_pgd20.json").write_text(json.dumps({"ckpt": f"{run}/checkpoints/last.ckpt", "rob_avg": 0.7}))
    (run / "csv").mkdir()
    (run / "csv" / "metrics.csv").write_text("epoch,perf/epoch_seconds\n0,12.5\n")
    (run / "train.log").write_text("not kept")
    return run


def _keep(src: Path, dst: Path) -> str:
    proc = subprocess.run([*KEEP, str(src), str(dst)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_keep_copies_what_reports_read_with_no_absolute_path(tmp_path):
    out = tmp_path / "outputs" / "study"
    run = _run_dir(out, "pgd_at/seed0", [0.75, 0.875])
    kept = tmp_path / "kept" / "pgd_at" / "seed0"
    assert _keep(run, kept) == f"kept {kept}"
    assert sorted(p.name for p in kept.iterdir()) == ["config.yaml", "csv", "eval_pgd20.json", "metrics.json"]
    assert (kept / "csv" / "metrics.csv").read_text() == "epoch,perf/epoch_seconds\n0,12.5\n"  # the cost table's
    for path in kept.glob("*.*"):
        text = path.read_text()
        assert str(tmp_path) not in text and str(ROOT) not in text, (path.name, text)
    assert json.loads((kept / "eval_pgd20.json").read_text())["ckpt"] == "study/pgd_at/seed0/checkpoints/last.ckpt"
    assert "root: ./data/cifar10" in (kept / "config.yaml").read_text()
    assert json.loads((kept / "metrics.json").read_text()) == json.loads((run / "metrics.json").read_text())


def test_a_retrained_base_is_compared_with_the_kept_one_never_overwriting_it(tmp_path):
    kept = tmp_path / "kept" / "trades6" / "seed0"
    _keep(_run_dir(tmp_path / "a", "trades6/seed0", [0.75, 0.875]), kept)
    first = (kept / "metrics.json").read_text()

    (kept / "csv" / "metrics.csv").unlink()  # kept before the CSV was: a reproduced run fills the gap
    same = _run_dir(tmp_path / "b", "trades6/seed0", [0.75, 0.875])
    (same / "eval_autoattack.json").write_text(json.dumps({"ckpt": "x", "rob_avg": 0.8}))
    assert _keep(same, kept) == f"kept {kept} (+csv/metrics.csv, eval_autoattack.json)"  # the same model's files join
    assert _keep(same, kept) == f"reproduced {kept}"

    other = _run_dir(tmp_path / "c", "trades6/seed0", [0.75, 0.75])
    (other / "eval_other.json").write_text("{}")
    assert _keep(other, kept) == f"DIFFERS from {kept}"
    assert (kept / "metrics.json").read_text() == first and not (kept / "eval_other.json").exists()


def test_a_folder_without_metrics_is_one_line(tmp_path):
    proc = subprocess.run([*KEEP, str(tmp_path), str(tmp_path / "kept")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip() == f"keep_results: no metrics.json in '{tmp_path}'"
    assert not (tmp_path / "kept").exists()


def _fake_python(tmp_path: Path) -> Path:
    """A PY for study_common.sh: `-m batlit.train ... hydra.run.dir=D` writes D/metrics.json and logs
    its arguments; anything else (keep_results.py) runs in the real interpreter."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "py"
    fake.write_text(f"""#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = batlit.train ]; then
  echo "$*" >> {calls}
  for a in "$@"; do case $a in hydra.run.dir=*) d=${{a#hydra.run.dir=}} ;; esac; done
  mkdir -p "$d" && echo '{{"rob_per_class": [0.5], "std_per_class": [0.5], "bndy_per_class": [0.0]}}' > "$d/metrics.json"
  exit 0
fi
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    return fake


def _train(tmp_path: Path, results: Path | None, name: str, need_ckpt: bool = False) -> str:
    env = {**os.environ, "PY": str(_fake_python(tmp_path)), "OUT": str(tmp_path / "out"), "EXPERIMENT": "e"}
    if results is not None:
        env["RESULTS"] = str(results)
    if need_ckpt:
        env["NEED_CKPT"] = "1"
    proc = subprocess.run(["bash", "-c", 'source scripts/study_common.sh && train "$1" seed=0', "t", name],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_train_skips_a_kept_run_unless_its_checkpoint_is_needed(tmp_path):
    results = tmp_path / "results"
    (results / "pgd_at" / "seed0").mkdir(parents=True)
    (results / "pgd_at" / "seed0" / "metrics.json").write_text(
        '{"rob_per_class": [0.5], "std_per_class": [0.5], "bndy_per_class": [0.0]}')
    assert _train(tmp_path, results, "pgd_at/seed0").splitlines() == ["kept     pgd_at/seed0"]
    assert not (tmp_path / "calls.txt").exists()

    again = _train(tmp_path, results, "pgd_at/seed0", need_ckpt=True).splitlines()  # a fine-tuning's base
    assert again == ["training pgd_at/seed0", f"reproduced {results / 'pgd_at' / 'seed0'}"]
    assert "experiment=e seed=0 resume=true" in (tmp_path / "calls.txt").read_text()

    new = _train(tmp_path, results, "bat/seed0").splitlines()  # a new run is trained and kept
    assert new == ["training bat/seed0", f"kept {results / 'bat' / 'seed0'}"]
    assert (results / "bat" / "seed0" / "metrics.json").is_file()


def test_without_results_train_keeps_nothing(tmp_path):
    """The round-1 studies set no RESULTS: train behaves as before, outputs/ only."""
    assert _train(tmp_path, None, "bat/seed0").splitlines() == ["training bat/seed0"]
    assert (tmp_path / "out" / "bat" / "seed0" / "metrics.json").is_file()
    assert _train(tmp_path, None, "bat/seed0").splitlines() == ["done     bat/seed0"]


@pytest.mark.slow
def test_round2_dry_run_resumes_on_a_new_machine_from_the_kept_results(tmp_path, shared_cifar10_jpeg):
    """scripts/study_round2.sh on a few hundred real images; then, with only the kept results (a new
    machine), FRL from TRADES(6) retrains its base, which reproduces the kept one exactly on the CPU."""
    results = tmp_path / "results"
    env = {**os.environ, "BATLIT_DRY_RUN": "1", "SEEDS": "0", "PYTHON": sys.executable, "RESULTS": str(results)}

    def study(out: str, methods: str) -> str:
        proc = subprocess.run(["bash", "scripts/study_round2.sh"], cwd=ROOT, capture_output=True, text=True,
                              timeout=900, env={**env, "OUT": str(tmp_path / out), "METHODS": methods})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    first = study("first", "pgd_at trades6 faal_at").splitlines()
    # each model is evaluated and kept as soon as it is trained, before the next one trains
    assert first.index("autoattack pgd_at/seed0") < first.index("training trades6/seed0")
    for run in ("pgd_at/seed0", "trades6/seed0", "faal_at/seed0"):
        assert sorted(p.name for p in (results / run).iterdir()) == [
            "config.yaml", "csv", "eval_autoattack.json", "eval_pgd20.json", "metrics.json"], run
    second = study("second", "pgd_at trades6 faal_at frl_trades").splitlines()
    assert {"kept     pgd_at/seed0", "kept     trades6/seed0", "kept     faal_at/seed0"} <= set(second)
    assert f"reproduced {results / 'trades6' / 'seed0'}" in second
    assert not (tmp_path / "second" / "pgd_at").exists()  # nothing kept is trained again
    tables = (results / "tables.md").read_text()
    assert "| +FRL | 1 |" in tables and "| FAAL (from PGD-AT) | 1 |" in tables
    claims = (results / "claims.md").read_text().splitlines()  # FAAL and FRL against their bases, one seed
    assert claims[0].startswith("| Claim | Seeds |")
    assert any(line.startswith("| FAAL (from PGD-AT) vs PGD-AT") for line in claims)  # display names (round2_tables)


def test_report_csv_names_runs_relative_to_the_working_directory(tmp_path, monkeypatch):
    """batlit.report's report.csv: a study kept in the repository names no absolute path."""
    import csv

    from batlit.report.tables import report

    for seed in (0, 1):
        run = tmp_path / "kept" / "pgd_at" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({
            "method": "pgd_at", "seed": seed, "std_avg": 0.5, "std_worst": 0.75, "bndy_avg": 0.25,
            "bndy_worst": 0.5, "rob_avg": 0.75, "rob_worst": 1.0, "std_per_class": [0.25, 0.75],
            "bndy_per_class": [0.5, 0.0], "rob_per_class": [0.75, 0.75], "class_names": ["a", "b"],
            "count_per_class": [2, 2]}))
    monkeypatch.chdir(tmp_path)
    report([Path("kept/pgd_at")], None, tmp_path / "out", figures=False)
    rows = list(csv.DictReader((tmp_path / "out" / "report.csv").open()))
    assert rows[0]["runs"] == "kept/pgd_at/seed0;kept/pgd_at/seed1"
