"""The training entry point, as a user runs it: python -m batlit.train ..."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, run_cli, train, train_multirun


def test_each_method_trains_on_synthetic_and_writes_outputs(tmp_path):
    methods = ["standard", "pgd_at", "trades"]
    records = train_multirun(tmp_path, f"method={','.join(methods)}", "logger=many")  # one process, three runs
    assert [r["method"] for r in records] == methods
    for job, record in enumerate(records):
        check_record(record, tmp_path / str(job))
        assert list((tmp_path / str(job) / "tensorboard").glob("events.out.tfevents.*"))


def check_record(record: dict, run_dir) -> None:
    assert record["data"] == "synthetic" and record["model"] == "small_cnn"
    counts = record["count_per_class"]
    assert record["num_test_samples"] == sum(counts) == 256  # data/synthetic.yaml's n_test
    for name in ("std", "bndy", "rob"):
        per_class = record[f"{name}_per_class"]
        assert len(per_class) == record["num_classes"] == len(record["class_names"])
        # the summary is the per-class list's: mean over classes, max and the first class at the max
        assert record[f"{name}_avg"] == pytest.approx(sum(per_class) / len(per_class), rel=1e-6)
        assert record[f"{name}_worst"] == pytest.approx(max(per_class))
        assert record[f"{name}_worst_class"] == record["class_names"][per_class.index(max(per_class))]
    # the adversarial confusion matrix: rows are the true classes (each sums to the class count);
    # a row's off-diagonal, adversarially wrong samples are at least the boundary errors and at most the robust ones
    confusion = record["adv_confusion"]
    assert [sum(row) for row in confusion] == counts
    for c, row in enumerate(confusion):
        wrong = counts[c] - row[c]
        assert round(counts[c] * record["bndy_per_class"][c]) <= wrong <= round(counts[c] * record["rob_per_class"][c])
    assert record["attack"]["steps"] == 2 and record["attack"]["loss"] == "ce"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()


@pytest.mark.slow  # the fast suite trains digits in the quickstart and resume tests, these methods on synthetic
def test_each_method_trains_on_digits(tmp_path):
    records = train_multirun(tmp_path, "method=standard,pgd_at,trades", "data=digits", "attack=digits",
                             "epochs=2", "attack.train.steps=2", "attack.test.steps=2", "attack.val.steps=1")
    assert [r["method"] for r in records] == ["standard", "pgd_at", "trades"]
    for record in records:
        assert record["num_test_samples"] == 450 and record["class_names"][0] == "0"


@pytest.mark.parametrize("epochs", [
    pytest.param(4, id="shortened"),
    pytest.param(None, id="as-documented", marks=pytest.mark.slow),  # a minute: make test-all
])
def test_quickstart_prints_the_table_and_the_output_dir(tmp_path, epochs):
    proc = run_cli("batlit.train", "experiment=quickstart", "trainer.enable_progress_bar=false",
                   *([f"epochs={epochs}"] if epochs else []), f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for word in ("class", "Std", "Bndy", "Rob", "avg", "worst", "Outputs written to", str(tmp_path)):
        assert word in out
    # the cost of the run, said before training starts (batlit/tools/cost.py)
    estimate = next(line for line in out.splitlines() if line.startswith("batlit: estimated "))
    assert f"({epochs or 15} epochs, validation and test included; pgd_at, small_cnn on cpu" in estimate
    assert out.index(estimate) < out.index("Outputs written to")
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["method"] == "pgd_at" and record["data"] == "digits"
    # adversarial training on digits: robust error clearly above standard error, and unequal across classes
    assert record["rob_avg"] > record["std_avg"] + 0.05
    assert record["rob_worst"] > record["rob_avg"] + 0.03


@pytest.mark.parametrize("override,key", [
    ("attack.eps=-0.1", "attack.eps"),
    ("attack.train.eps=-0.1", "attack.train.eps"),
    ("optimizer.name=rmsprop", "optimizer.name"),
    ("scheduler=multistep scheduler.factors=[0.1]", "scheduler.factors"),
    ("trainer.inference_mode=true", "trainer.inference_mode"),
    ("attack.train.step_size=0", "attack.train.step_size"),
    ("attack.train.steps=0", "attack.train.steps"),
    ("data.batch_size=0", "data.batch_size"),
    ("epochs=0", "epochs"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("model.num_classes=7", "model.num_classes"),
])
def test_bad_input_stops_before_training_with_one_line(tmp_path, override, key):
    proc = run_cli("batlit.train", *TINY, *override.split(), f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert key in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_group_option_lists_the_choices(tmp_path):
    proc = run_cli("batlit.train", "method=nonsense", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "nonsense" in proc.stderr and "pgd_at" in proc.stderr and "trades" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_cifar10_fails_fast_naming_the_path(tmp_path):
    root = tmp_path / "empty"  # exists, but holds no CIFAR-10 (a root that does not exist: test_reliability)
    root.mkdir()
    proc = run_cli("batlit.train", "data=cifar10", "model=small_cnn", f"data.root={root}", "data.download=false",
                   f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    assert proc.returncode == 1
    assert str(root) in proc.stderr and "Traceback" not in proc.stderr


def test_wall_seconds_adds_the_fit_time_of_earlier_sessions():
    """metrics.json wall_seconds.fit: Lightning's Timer, whose state last.ckpt keeps, so a resumed
    run counts the killed session's training too."""
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    from batlit.train import wall_seconds

    timer = Timer(verbose=False)
    timer.load_state_dict({"time_elapsed": {"train": 123.456, "test": 9.0}})
    assert wall_seconds(SimpleNamespace(callbacks=[timer])) == {"fit": 123.46, "test": 0.0}
    assert wall_seconds(SimpleNamespace(callbacks=[])) is None
