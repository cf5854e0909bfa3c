"""The benchmark entry point and the prepared GPU script, at tiny sizes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from batlit.tools.bench import reference_trajectory
from conftest import ROOT, run_cli


def test_bench_writes_per_method_figures_and_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("batlit.bench", "model=small_cnn", "batch_size=8", "repeats=2", "warmup=0",
                   "data.image_size=16", "attack.train.steps=2", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(out.read_text())
    assert set(record["methods"]) == {"standard", "pgd_at", "trades", "bat", "reference_bat"}
    for entry in record["methods"].values():
        assert entry["seconds_per_step"] > 0 and len(entry["times"]) == 2
        assert entry["images_per_s"] == pytest.approx(8 / entry["seconds_per_step"])
    assert set(record["ratios"]) == {"bat_over_pgd_at", "reference_over_bat"}
    assert "pgd_at" in proc.stdout and "reference_over_bat" in proc.stdout
    # FLOPs as executed: a standard step is a forward and a backward (about 3 forwards, less the
    # input gradient of the first convolution); PGD-AT adds 2 attack steps of a forward and an
    # input gradient each
    fwd = record["model_forward_gflops_per_image"] * 1e9 * 8
    standard, pgd_at = (record["methods"][m]["flops_per_step"] for m in ("standard", "pgd_at"))
    assert 2.5 * fwd < standard <= 3.01 * fwd
    assert standard + 2 * 1.5 * fwd < pgd_at <= standard + 2 * 2.01 * fwd
    assert record["methods"]["bat"]["achieved_tflops"] > 0 and record["bf16_peak_tflops"] is None


def test_bench_rejects_an_unknown_method(tmp_path):
    proc = run_cli("batlit.bench", "methods=[pgd_at,fgsm]")
    assert proc.returncode == 2 and "fgsm" in proc.stderr and "Traceback" not in proc.stderr


def test_reference_trajectory_agrees_with_boundary_pgd():
    """The in-benchmark reference of the authors' algorithm gives the same examples (same start)."""
    from batlit.attacks import boundary_pgd

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)).double().eval()
    x, y = torch.rand(32, 3, 4, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    kw = dict(eps=0.1, step_size=0.02, steps=8, tau=1)
    ours = boundary_pgd(model, x, y, init_std=0.0, **kw)
    with torch.enable_grad():
        lc = reference_trajectory(model, x, y, init_std=0.0, output="last_clean", **kw)
        fa = reference_trajectory(model, x, y, init_std=0.0, output="first_adv", **kw)
    torch.testing.assert_close(lc, ours.last_clean)
    torch.testing.assert_close(fa, ours.first_adv)


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path):
    import tarfile

    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "WORK": str(work), "BATLIT_DRY_RUN": "1", "PYTHON": os.sys.executable,
           "TIME_SCALE": "3"}
    proc = subprocess.run(["bash", "scripts/gpu_bench.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["console.log", "results.tar.gz", "summary.md"]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert {"results/results/bench_b16.json", "results/results/cuda_tests.xml",
            "results/runs/epochs_bat/csv/metrics.csv"} <= set(names)
    bench = json.loads((work / "results" / "bench_b16.json").read_text())
    assert {"bat_frozen", "bat_nosync", "reference_bat"} <= set(bench["methods"])
    checked = json.loads((work / "results" / "precision_probe.json").read_text())  # the attack-strength step
    assert set(checked["attacks"]) == {"trades", "bat", "pgd_at"}


@pytest.mark.slow
def test_study_script_dry_run_runs_the_whole_pipeline(tmp_path, shared_cifar10_jpeg):
    """scripts/study_cifar10_cpu.sh on a few hundred real images, then again: everything skipped."""
    import sys

    env = {**os.environ, "OUT": str(tmp_path), "SEEDS": "0", "BATLIT_DRY_RUN": "1", "PYTHON": sys.executable}
    first = subprocess.run(["bash", "scripts/study_cifar10_cpu.sh"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    table = (tmp_path / "report" / "report.md").read_text()
    for row in ("| standard |", "| pgd_at |", "| trades (beta=1) |", "| trades (beta=6) |", "| fat |",
                "| gairat |", "| bat |", "| frl_rwrm |"):
        assert row in table, row
    assert "autoattack Worst Rob" in table and (tmp_path / "bat" / "seed0" / "analysis" / "analysis.json").is_file()
    assert (tmp_path / "bat" / "seed0" / "analysis" / "gallery.png").is_file()
    assert (tmp_path / "report" / "source_target_classes.png").is_file()
    choice = json.loads((tmp_path / "frl_choice.json").read_text())
    scores = {n: (choice["val_rob_worst"][n], choice["val_rob_avg"][n]) for n in choice["val_rob_worst"]}
    assert set(scores) == {"frl_tau0.05", "frl_tau0.07"} and scores[choice["chosen"]] == min(scores.values())
    table4 = (tmp_path / "report_table4" / "report.md").read_text()
    assert "exclude_classes=[2, 3, 4, 5]" in table4 and "exclude_classes=[1, 6, 8, 9]" in table4
    again = subprocess.run(["bash", "scripts/study_cifar10_cpu.sh"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0 and "training " not in again.stdout and "done     bat/seed0" in again.stdout


def test_frl_tau_is_chosen_on_validation_worst_then_average_robust_error(tmp_path):
    """study_common.sh's choose_frl: the lower mean val worst-class robust error over seeds, then the
    lower average; a full tie goes to the first listed (the smaller tau)."""
    import sys

    def runs(name, *vals):
        for seed, (worst, avg) in enumerate(vals):
            d = tmp_path / name / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps({"val": {"rob_worst": worst, "rob_avg": avg}}))

    def choose(*names):
        proc = subprocess.run(["bash", "-c", 'source scripts/study_common.sh && choose_frl "$@"', "choose", *names],
                              cwd=ROOT, env={**os.environ, "PY": sys.executable, "OUT": str(tmp_path)},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads((tmp_path / "frl_choice.json").read_text())

    runs("a", (0.75, 0.5), (0.25, 0.5))  # worst 0.5 on average (binary-exact values: ties are real ties)
    runs("b", (0.5, 0.25), (0.5, 0.25))  # worst 0.5 too, lower average: chosen
    runs("c", (0.75, 0.125), (0.75, 0.125))  # best average, worse worst class
    assert choose("a", "b", "c")["chosen"] == "b"
    runs("d", (0.5, 0.25), (0.5, 0.25))  # ties b on both
    tie = choose("d", "b")
    assert tie["chosen"] == "d" and tie["tied"] == ["d", "b"]


def test_a_rerun_of_other_methods_keeps_frl_in_the_report(tmp_path):
    """finish_study chooses FRL's tau from the runs in OUT, not from METHODS: resuming with
    METHODS="gairat" must not drop FRL's row from the final report."""
    import sys

    script = ('source scripts/study_common.sh; autoattack_final() { :; }; analyze_pair() { :; }; '
              'final_reports() { echo "report frl=[$1]"; }; finish_study 20 frl_a frl_b')

    def finish():
        proc = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PY": sys.executable, "OUT": str(tmp_path), "METHODS": "gairat"})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()[-1]

    assert finish() == "report frl=[]"  # no FRL runs: the report has no FRL row, and nothing fails
    for name, worst in (("frl_a", 0.75), ("frl_b", 0.5)):
        (tmp_path / name / "seed0").mkdir(parents=True)
        (tmp_path / name / "seed0" / "metrics.json").write_text(
            json.dumps({"val": {"rob_worst": worst, "rob_avg": 0.5}}))
    assert finish() == f"report frl=[{tmp_path / 'frl_b'}]"


@pytest.mark.slow
def test_gpu_study_script_dry_run(tmp_path, shared_cifar10_jpeg):
    """scripts/study_cifar10_gpu.sh with the paper configs, rescaled to 2 epochs on a few hundred images."""
    import sys

    env = {**os.environ, "OUT": str(tmp_path), "SEEDS": "0", "BATLIT_DRY_RUN": "1", "PYTHON": sys.executable,
           "METHODS": "standard pgd_at fat bat frl"}
    proc = subprocess.run(["bash", "scripts/study_cifar10_gpu.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import yaml

    fat = yaml.safe_load((tmp_path / "fat" / "seed0" / "config.yaml").read_text())
    # FAT's 120-epoch schedule squeezed into 2 epochs: lr milestones 60/90/110 and tau steps at 51/91
    assert fat["epochs"] == 2 and fat["scheduler"]["milestones"] == [1, 2, 2]
    assert fat["method"]["tau_schedule"] == [[1, 1], [2, 2]] and fat["model"]["_target_"].endswith("small_cnn")
    table = (tmp_path / "report" / "report.md").read_text()
    for row in ("| standard |", "| pgd_at |", "| fat |", "| bat |", "| frl_rwrm |"):
        assert row in table, row
    assert (tmp_path / "bat" / "seed0" / "analysis" / "gallery.json").is_file()
    bad = subprocess.run(["bash", "scripts/study_cifar10_gpu.sh"], cwd=ROOT, env={**env, "BATLIT_DRY_RUN": "0",
                         "EPOCHS": "ten"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "EPOCHS" in bad.stderr
    # the same folder under another protocol is refused before any work
    other = subprocess.run(["bash", "scripts/study_cifar10_gpu.sh"], cwd=ROOT, env={**env, "BATLIT_DRY_RUN": "0",
                           "EPOCHS": "3"}, capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and "use another OUT" in other.stderr and "training" not in other.stdout


@pytest.mark.slow  # five fresh bench processes
def test_speedup_rounds_reports_each_round_and_the_median(tmp_path):
    out = tmp_path / "rounds.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "speedup_rounds.py"), "--rounds", "2", "--out", str(out),
                           "model=small_cnn", "model.width=2", "batch_size=4", "repeats=1", "warmup=0",
                           "data.image_size=8", "attack.train.steps=1", "methods=[pgd_at]", "precision=bf16",
                           "channels_last=true"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(out.read_text())
    ratios = [r["ratios"]["pgd_at"] for r in record["rounds"]]
    assert len(ratios) == 2 and record["median_speedup"]["pgd_at"] == pytest.approx(sum(ratios) / 2)
    for r in record["rounds"]:
        assert r["ratios"]["pgd_at"] == pytest.approx(r["fp32_ms"]["pgd_at"] / r["fast_ms"]["pgd_at"])
    assert record["settings"]["fast"] == {"precision": "bf16", "channels_last": True, "fold_batchnorm": True}
    assert "round 2: pgd_at" in proc.stdout and "median" in proc.stdout


@pytest.mark.parametrize("args,message", [(["--rounds", "0"], "--rounds must be >= 1, got 0"),
                                          (["out=x.json"], "'out=x.json': this script sets out= and baseline=")])
def test_speedup_rounds_rejects_bad_input_before_running(args, message):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "speedup_rounds.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr
