"""scripts/round2_tables.py: the accuracy tables of docs/results_round2.md, on a hand-made study folder."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _seed(study, name, seed, std_avg, std_worst, rob_avg, rob_worst, n=1000, worst=(3,)):
    """One seed's AutoAttack record; the classes in ``worst`` (cat: 3) share the worst robust error."""
    run = study / name / f"seed{seed}"
    run.mkdir(parents=True)
    per_class = [rob_worst if k in worst else rob_avg - 0.01 for k in range(10)]
    (run / "eval_autoattack.json").write_text(json.dumps(
        {"std_avg": std_avg, "std_worst": std_worst, "rob_avg": rob_avg, "rob_worst": rob_worst, "n_samples": n,
         "rob_per_class": per_class, "class_names": CLASSES}))


def _tables(*args):
    """round2_tables.py's output (stdout, stderr, return code)."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "round2_tables.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_tables_give_accuracies_over_seeds_and_rho_against_the_baseline(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "protocol.txt").write_text("experiment=study_cifar10_cpu\n")
    _seed(study, "trades6", 0, 0.6, 0.8, 0.8, 0.9)    # accuracies 40 / 20 / 20 / 10
    _seed(study, "wat", 0, 0.6, 0.7, 0.82, 0.85)      # 40 / 30 / 18 / 15
    _seed(study, "wat", 1, 0.62, 0.75, 0.84, 0.87, worst=(2,))    # 38 / 25 / 16 / 13, worst class bird
    _seed(study, "frl_tau0.07", 0, 0.5, 0.6, 0.9, 1.0, worst=(2, 3))  # bird and cat tie at 100% error
    (study / "frl_choice.json").write_text(json.dumps({"chosen": "frl_tau0.07"}))
    _seed(study, "standard", 0, 0.5, 0.7, 0.99, 1.0, worst=(1, 2, 3, 4))  # four classes tie: counted, not named
    proc = _tables(study)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "| TRADES(6) | 1 | 40.0 | 20.0 | 20.0 | 10.0 | +0.000 |" in lines
    # WAT: means 39 / 27.5 / 17 / 14, sd over 2 seeds; rho = (14 - 10)/10 - (20 - 17)/20 = 0.25
    assert "| +WAT | 2 | 39.0 ± 1.4 | 27.5 ± 3.5 | 17.0 ± 1.4 | 14.0 ± 1.4 | +0.250 |" in lines
    # FRL from PGD-AT is the tau folder chosen on validation; no PGD-AT baseline here: rho undefined
    # the every-method table names each seed's worst class under AutoAttack, ties joined by =
    assert "| FRL (from PGD-AT) | 1 | 50.0 | 40.0 | 10.0 | 0.0 | - | bird=cat |" in lines
    assert "| WAT | 2 | 39.0 ± 1.4 | 27.5 ± 3.5 | 17.0 ± 1.4 | 14.0 ± 1.4 | - | cat, bird |" in lines
    assert "| standard | 1 | 50.0 | 30.0 | 1.0 | 0.0 | - | 4 tied |" in lines
    assert ("in how many of these 5 runs: cat 2, bird 1; in 2 more, several classes tie at the worst"
            in proc.stdout)
    assert "same 1000 AutoAttack test images" in proc.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "protocol.txt").write_text("experiment=study_cifar10_cpu_large\n")
    proc = _tables(empty, "--trades-only")
    assert proc.returncode == 0 and "(no run of these methods has its AutoAttack evaluation yet)" in proc.stdout


def test_a_folder_that_is_no_study_is_refused(tmp_path):
    proc = _tables(tmp_path)
    assert proc.returncode == 2 and "not a study folder (no protocol.txt)" in proc.stderr


def _timed_run(study, name, seed, walls, epoch_seconds, pgd20, autoattack):
    run = study / name / f"seed{seed}"
    (run / "csv").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"wall_seconds": walls}))
    (run / "csv" / "metrics.csv").write_text(
        "epoch,perf/epoch_seconds,step\n0,,9\n" + "".join(f"{i},{t},{i}\n" for i, t in enumerate(epoch_seconds)))
    (run / "eval_pgd20.json").write_text(json.dumps({"seconds": pgd20}))
    (run / "eval_autoattack.json").write_text(json.dumps(
        {"seconds": autoattack, "std_avg": 0.5, "std_worst": 0.8, "rob_avg": 0.8, "rob_worst": 0.95, "n_samples": 1000}))


def test_cost_tables_sum_each_scale_and_the_whole_study_from_the_runs_records(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    for study in (small, large):
        study.mkdir()
        (study / "protocol.txt").write_text("experiment=study_cifar10_cpu\n")
    # a resumed run: its wall time is the sum of its sessions
    _timed_run(small, "pgd_at", 0, {"fit_0": 100.0, "fit_1": 140.0}, [9.0, 8.5, 10.0], 2.0, 120.0)
    _timed_run(small, "pgd_at", 1, {"fit_0": 360.0}, [8.0], 4.0, 240.0)
    _timed_run(small, "frl_tau0.05", 0, {"fit_0": 60.0}, [22.0], 3.0, 117.0)
    _timed_run(large, "trades6", 0, {"fit_0": 1800.0}, [60.0], 10.0, 390.0)
    proc = _tables(small, large)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # PGD-AT: training 240 s and 360 s: 5.0 min on average; fastest epoch 8.5 then 8.0: 8.2 (mean of
    # each run's fastest); all of it: 240 + 360 + 2 + 4 + 120 + 240 = 966 s = 0.27 h
    assert "| PGD-AT | 2 | 5.0 | 8.2 | 3 | 180 | 0.27 |" in lines
    assert "| FRL (from PGD-AT, τ 0.05) | 1 | 1.0 | 22.0 | 3 | 117 | 0.05 |" in lines
    assert "| TRADES(6) | 1 | 30.0 | 60.0 | 10 | 390 | 0.61 |" in lines
    assert f"Every kept run and evaluation of {small}: 0.32 h over 3 runs." in proc.stdout
    # small: 966 + 60 + 3 + 117 = 1146 s; the whole study 1146 + 2200 = 3346 s
    assert "The whole study: 0.93 h of wall time over 4 runs and their evaluations." in lines
