"""BAT through the real CLI: a training run, the Table 2 ablations as one multirun, and analyze."""

from __future__ import annotations

import csv
import json
import math

import pytest

from conftest import TINY, run_cli, train


@pytest.fixture(scope="module")
def bat_run(tmp_path_factory):
    """Two epochs of BAT through the CLI, shared by the logging and the analyze checks."""
    run_dir = tmp_path_factory.mktemp("bat_run")
    return run_dir, train(run_dir, "method=bat", "epochs=2")


def test_bat_trains_and_logs_every_term_and_per_class_steps(bat_run):
    run_dir, record = bat_run
    assert record["method"] == "bat"
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    logged = {k for row in rows for k, v in row.items() if v}
    for key in ("train/loss", "train/natural", "train/robust_kl", "train/target", "train/uniform_last_clean",
                "train/uniform_first_adv", "train/steps_to_boundary", "train/never_misclassified",
                "train/steps_to_boundary/class0", "train/steps_to_boundary/class9"):
        assert key in logged, key
    per_epoch = [row for row in rows if row.get("train/never_misclassified")]
    assert len(per_epoch) == 2
    for row in per_epoch:  # K = 2 steps: a never-misclassified sample counts K, the others less
        mean, never = float(row["train/steps_to_boundary"]), float(row["train/never_misclassified"])
        assert 2 * never <= mean <= 2 * never + (1 - never) * 1 + 1e-6


@pytest.mark.slow  # both options are checked term by term in methods/test_bat.py; this is the CLI path
def test_bat_on_digits_with_paper_direction_and_fused_forward(tmp_path):
    record = train(tmp_path, "method=bat", "data=digits", "attack=digits", "method.uniform_kl=uniform_to_model",
                   "method.fused_forward=true", "attack.train.steps=3")
    assert record["num_classes"] == 10


@pytest.mark.parametrize("numbers", [
    pytest.param([1, 6], id="first-and-last", marks=pytest.mark.slow),  # methods/test_bat.py checks the terms in-process
    pytest.param([1, 2, 3, 4, 5, 6], id="all-rows", marks=pytest.mark.slow),
])
def test_table2_ablation_rows_each_train(tmp_path, numbers):
    rows = ",".join(f"bat_ablation_row{i}" for i in numbers)
    proc = run_cli("batlit.train", "-m", f"experiment={rows}", *TINY, f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, number in enumerate(numbers):
        record = json.loads((tmp_path / str(job) / "metrics.json").read_text())
        assert record["experiment"] == f"bat_ablation_row{number}" and record["method"] == "bat"
    config = (tmp_path / str(len(numbers) - 1) / "config.yaml").read_text()
    assert "source: fixed" in config


def test_bad_method_option_is_reported_before_any_data_is_read(tmp_path):
    """The method's own checks run before the data module reads a file: here the folder holds no
    image at all, and the error is still the method option's (more options: run/test_configs.py)."""
    option, key = "method.uniform_kl=sideways", "method.uniform_kl"
    for split in ("train", "test"):
        (tmp_path / "ds" / split / "dog").mkdir(parents=True)
        (tmp_path / "ds" / split / "dog" / "notes.txt").write_text("not an image")
    args = [a for a in TINY if not a.startswith("data=")]
    proc = run_cli("batlit.train", *args, "data=image_folder", f"data.root={tmp_path / 'ds'}", "method=bat", option,
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and key in proc.stderr and "notes.txt" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def analysed(bat_run, hot_start):
    """``batlit.analyze`` of the BAT run, with the Figure 5 gallery against the PGD-AT run."""
    ckpt = bat_run[0] / "checkpoints" / "last.ckpt"
    proc = run_cli("batlit.analyze", f"ckpt={ckpt}", "n_samples=100", "source.steps=30", "source.step_size=0.004",
                   "progress_bar=false", f"gallery.baseline_ckpt={hot_start / 'checkpoints' / 'last.ckpt'}",
                   "gallery.n_images=6", "gallery.neighbours=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return bat_run[0] / "analysis", proc


def test_analyze_writes_json_and_figures(analysed):
    out = analysed[0]
    result = json.loads((out / "analysis.json").read_text())
    assert result["n_samples"] == 100 and len(result["class_names"]) == 10
    src, tgt = result["source"], result["target"]
    assert len(src["mean_steps_per_class"]) == 10 and all(0 <= s <= 30 for s in src["mean_steps_per_class"])
    assert src["eps"] == pytest.approx(0.0313725, rel=1e-4)  # from the run's attack.eps
    # rows of the confusion matrix are the true classes; the target distribution is its
    # off-diagonal column sums, normalised (batlit.analyze), and its distances are to U(10)
    confusion = tgt["confusion"]
    assert [sum(row) for row in confusion] == result["robustness"]["count_per_class"]
    off = [sum(confusion[i][j] for i in range(10) if i != j) for j in range(10)]
    assert tgt["target_distribution"] == pytest.approx([v / sum(off) for v in off])
    p = tgt["target_distribution"]
    assert tgt["kl_to_uniform"] == pytest.approx(sum(q * math.log(10 * q) for q in p if q > 0))
    assert tgt["tv_to_uniform"] == pytest.approx(0.5 * sum(abs(q - 0.1) for q in p))
    assert len(result["robustness"]["rob_per_class"]) == 10
    for name in ("confusion.png", "classwise.png", "survival.png"):
        assert (out / name).stat().st_size > 1000


def test_analyze_missing_checkpoint_is_one_line(tmp_path):
    proc = run_cli("batlit.analyze", f"ckpt={tmp_path / 'none.ckpt'}")
    assert proc.returncode == 2 and "none.ckpt" in proc.stderr and "Traceback" not in proc.stderr
    forgotten = run_cli("batlit.analyze", "n_samples=10")  # no ckpt= at all: Hydra alone would print a traceback
    assert forgotten.returncode == 2 and forgotten.stderr.strip() == (
        "batlit: config error: ckpt is required, e.g. ckpt=outputs/train/runs/<run>/checkpoints/last.ckpt")


def test_analyze_gallery_against_a_baseline(analysed, bat_run):
    """Figure 5: test images the PGD-AT run gets wrong and the BAT run gets right, each beside the
    nearest training images of the class PGD-AT predicted."""
    out, proc = analysed
    ckpt = bat_run[0] / "checkpoints" / "last.ckpt"
    record = json.loads((out / "gallery.json").read_text())
    assert record["model"] == "BAT" and record["baseline"] == "PGDAT" and record["predictions"] == "clean"
    assert sum(record["n_eligible_per_class"]) == record["n_eligible"] >= len(record["cases"]) > 0
    assert len(record["cases"]) == min(6, record["n_eligible"])
    from batlit.checkpoint.store import datamodule_for, load_run

    dm = datamodule_for(load_run(ckpt).config, test_subset=100, eval_seed=0)  # analyze's images: eval_seed's
    for case in record["cases"]:
        assert case["model_pred"] == case["label"] == int(dm.test_y[case["analysed_index"]]) != case["baseline_pred"]
        assert all(i >= 0 for i in case["neighbours"])
        assert case["neighbour_distances"] == sorted(case["neighbour_distances"])
        assert all(int(dm.train_y[i]) == case["baseline_pred"] for i in case["neighbours"])
    assert (out / "gallery.png").stat().st_size > 1000
    assert "Gallery:" in proc.stdout


@pytest.mark.parametrize("override, key", [
    ("gallery.baseline_ckpt=nowhere.ckpt", "gallery.baseline_ckpt"),
    pytest.param("gallery.n_images=0", "gallery.n_images", marks=pytest.mark.slow),
    pytest.param("gallery.predictions=sideways", "gallery.predictions", marks=pytest.mark.slow),
    pytest.param("gallery.classes=2", "gallery.classes", marks=pytest.mark.slow),
    ("gallery.classes=[unicorn]", "gallery.classes: 'unicorn'"),
])
def test_analyze_bad_gallery_option_is_one_line(bat_run, hot_start, override, key):
    """Each fails in one line naming the key, before the analysis attacks run."""
    ckpt = bat_run[0] / "checkpoints" / "last.ckpt"
    baseline = [] if "baseline_ckpt" in override else [f"gallery.baseline_ckpt={hot_start / 'checkpoints' / 'last.ckpt'}"]
    proc = run_cli("batlit.analyze", f"ckpt={ckpt}", *baseline, override, "n_samples=20", "source.steps=2000")
    assert proc.returncode == 2 and key in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_analyze_gallery_baseline_of_other_data_is_refused(bat_run, tmp_path):
    other = tmp_path / "digits"
    train(other, "data=digits", "attack=digits", "method=pgd_at")
    proc = run_cli("batlit.analyze", f"ckpt={bat_run[0] / 'checkpoints' / 'last.ckpt'}",
                   f"gallery.baseline_ckpt={other / 'checkpoints' / 'last.ckpt'}")
    assert proc.returncode == 2 and "gallery.baseline_ckpt" in proc.stderr and "classes" in proc.stderr


def test_report_shows_the_source_and_target_class_analysis(analysed, bat_run, tmp_path):
    from batlit import report

    run_dir = bat_run[0]
    assert report.main([str(run_dir), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    analysis = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    assert "Source- and target-class analysis" in text
    assert f"| {analysis['source']['mean_steps']:.1f} |" in text
    assert (tmp_path / "source_target_classes.png").stat().st_size > 5000
