"""evaluate, report, W&B offline logging and sweeps, through the real command lines.

One 2-point multirun (two seeds of PGD-AT, W&B offline, a validation split) is trained once for
the module; evaluate and report then work on its real outputs.
"""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest
import torch
from omegaconf import OmegaConf

from batlit import report as report_mod
from batlit.attacks.pgd import cw_margin, pgd
from batlit.train import objective

from conftest import TINY, run_cli
from wandb_records import logged_keys


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """``python -m batlit.train -m seed=0,1 logger=wandb``: two tiny PGD-AT runs in one multirun."""
    out = tmp_path_factory.mktemp("sweep")
    proc = run_cli("batlit.train", "-m", *TINY, "method=pgd_at", "seed=0,1", "logger=wandb",
                   "data.val_size=40", f"hydra.sweep.dir={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_multirun_writes_one_run_per_point(sweep):
    runs = sorted(p.parent.name for p in sweep.rglob("metrics.json"))
    assert runs == ["0", "1"]
    seeds = [json.loads((sweep / r / "metrics.json").read_text())["seed"] for r in runs]
    assert seeds == [0, 1]
    val = json.loads((sweep / "0" / "metrics.json").read_text())["val"]
    # metrics.json's "val" is the last validation's class-wise summary: attack.val on the 40 held-out images
    assert sum(val["count_per_class"]) == 40 and len(val["rob_per_class"]) == 10
    assert val["rob_worst"] == pytest.approx(max(val["rob_per_class"]))
    assert val["rob_avg"] == pytest.approx(sum(val["rob_per_class"]) / 10)
    assert val["rob_worst_class"] == f"class{val['rob_per_class'].index(max(val['rob_per_class']))}"


def test_wandb_offline_run_holds_the_logged_keys(sweep):
    keys = logged_keys(sweep / "0")
    for key in ("train/loss", "val/rob_avg", "val/rob_worst", "val/std_worst", "test/rob_worst",
                "val/per_class_table/_type", "val/per_class_rob_error_table/_type",
                "val/adv_confusion_table/_type", "test/adv_confusion_table/_type", "test/per_class_table/_type"):
        assert key in keys["history"], key
    assert {"test/rob_worst", "test/rob_worst_class", "test/std_avg"} <= keys["summary"]
    assert "run_config" in keys["config"]  # the whole composed config


def test_wandb_runs_of_one_sweep_share_a_group(sweep):
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb_records import records

    groups = set()
    for job in ("0", "1"):
        (path,) = (sweep / job).glob("wandb/offline-run-*/run-*.wandb")
        for payload in records(path):
            rec = pb.Record()
            rec.ParseFromString(payload)
            if rec.WhichOneof("record_type") == "run":
                groups.add(rec.run.run_group)
    assert len(groups) == 1 and groups.pop().startswith("train-")


def test_evaluate_each_attack_in_one_multirun(sweep):
    ckpt = sweep / "0" / "checkpoints" / "last.ckpt"
    proc = run_cli("batlit.evaluate", "-m", f"ckpt={ckpt}", "attack=pgd20,cw,apgd_ce", "n_samples=10",
                   "progress_bar=false")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = sweep / "0"
    for attack, components in (("pgd20", ["PGD-20 (ce)"]), ("cw", ["PGD-30 (cw)"]),
                               ("apgd_ce", ["APGD-CE"])):  # the whole original AutoAttack: tests/fidelity/test_autoattack_original.py
        record = json.loads((run_dir / f"eval_{attack}.json").read_text())
        assert record["n_samples"] == 10 and record["attack"]["name"] == attack
        assert record["fold_batchnorm"] is True  # the default: BatchNorm folded (tests/models/test_fold.py)
        assert [c["name"] for c in record["components"]] == components
        assert math.isclose(record["attack"]["eps"], 8 / 255, rel_tol=1e-6)  # the run's eps
        # the robust accuracy after the last component is 1 - robust error, counted per class
        accs = [c["robust_acc"] for c in record["components"]]
        counts = record["count_per_class"]
        robust = sum(n * (1 - e) for n, e in zip(counts, record["rob_per_class"]))
        assert math.isclose(accs[-1] * 10, robust, abs_tol=1e-6)
        rows = list(csv.DictReader((run_dir / f"eval_{attack}.csv").open()))
        assert [r["class"] for r in rows[-2:]] == ["avg", "worst"] and len(rows) == 12
        assert f"eval_{attack}.json" in proc.stdout
    # the report picks the evaluations up as extra columns
    result = report_mod.report([sweep], out=sweep / "report_eval", figures=False)
    assert "apgd_ce Avg Rob" in result["table"] and "cw Worst Rob" in result["table"]


def test_evaluate_bad_input_is_one_line(tmp_path, sweep):
    ckpt = sweep / "0" / "checkpoints" / "last.ckpt"
    for args, needle in (([f"ckpt={tmp_path / 'nope.ckpt'}"], "ckpt: no checkpoint file"),
                         ([f"ckpt={ckpt}", "attack.steps=0"], "attack.steps must be an integer >= 1"),
                         ([f"ckpt={ckpt}", "n_samples=-3"], "n_samples must be"),
                         ([f"ckpt={ckpt}", "fold_batchnorm=maybe"], "fold_batchnorm must be true or false, got 'maybe'"),
                         ([f"ckpt={ckpt}", "eps=0"], "eps must be > 0 or null"),
                         (["attack=cw"], "ckpt is required")):
        proc = run_cli("batlit.evaluate", *args)
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_report_tables_two_seeds_as_mean_and_std(sweep, tmp_path):
    assert report_mod.main([str(sweep), "--baseline", str(sweep / "0"), "--out", str(tmp_path)]) == 0
    metrics = [json.loads((sweep / r / "metrics.json").read_text()) for r in ("0", "1")]
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert len(rows) == 1 and rows[0]["method"] == "pgd_at" and rows[0]["seeds"] == "2"
    for key in ("std_avg", "bndy_worst", "rob_worst"):
        values = [m[key] for m in metrics]
        assert math.isclose(float(rows[0][f"{key}_mean"]), statistics.fmean(values), abs_tol=1e-9)
        assert math.isclose(float(rows[0][f"{key}_sd"]), statistics.stdev(values), abs_tol=1e-9)
    text = (tmp_path / "report.md").read_text()
    assert "| Method | Seeds | Avg Std | Worst Std | Avg Bndy | Worst Bndy | Avg Rob | Worst Rob |" in text
    assert " ± " in text and "ρ rob" in text
    epochs = [float(r["perf/epoch_seconds"]) for run in ("0", "1")
              for r in csv.DictReader((sweep / run / "csv" / "metrics.csv").open()) if r["perf/epoch_seconds"]]
    assert "Cost: training time per epoch" in text and float(rows[0]["epochs_timed"]) == len(epochs) > 0
    walls = [sum(m["wall_seconds"].values()) for m in metrics]
    assert math.isclose(float(rows[0]["run_wall_seconds_mean"]), statistics.fmean(walls), rel_tol=1e-9)
    evals = [json.loads(e.read_text()).get("seconds", 0.0) for run in ("0", "1") for e in (sweep / run).glob("eval_*.json")]
    assert f"Wall time of all 2 runs and their evaluations: {(sum(walls) + sum(evals)) / 3600:.2f} h." in text
    assert math.isclose(float(rows[0]["epoch_seconds_min"]), min(epochs), rel_tol=1e-9)
    assert math.isclose(float(rows[0]["epoch_seconds_median"]), statistics.median(epochs), rel_tol=1e-9)
    for figure in ("per_class_errors.png", "clean_vs_robust.png"):
        assert (tmp_path / figure).stat().st_size > 5000


def test_report_groups_by_what_differs(tmp_path):
    def fake(name, method, seed, model="batlit.models.resnet18", **params):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({
            "method": method, "seed": seed, "class_names": ["a", "b"], "num_test_samples": 4,
            **{f"{m}_{k}": v for m in ("std", "bndy", "rob") for k, v in (("avg", 0.2 + seed / 10), ("worst", 0.4))},
            **{f"{m}_per_class": [0.1, 0.3] for m in ("std", "bndy", "rob")}}))
        OmegaConf.save({"seed": seed, "paths": {"output_dir": str(d)}, "data": {"seed": seed},
                        "model": {"_target_": model}, "method": {"_target_": method, **params}}, d / "config.yaml")

    fake("a0", "bat", 0, alpha=1.0, beta=6)
    fake("a1", "bat", 1, alpha=1.0, beta=6)
    fake("b0", "bat", 0, alpha=2.0, beta=6)
    fake("p0", "pgd_at", 0)
    groups = report_mod.group_runs(report_mod.find_runs([tmp_path]))
    assert sorted((g.label, len(g.runs)) for g in groups) == [
        ("bat (alpha=1)", 2), ("bat (alpha=2)", 1), ("pgd_at", 1)]
    fake("w0", "pgd_at", 0, model="batlit.models.wrn34_10")  # another architecture is another row
    groups = report_mod.group_runs(report_mod.find_runs([tmp_path]))
    assert sorted((g.label, len(g.runs)) for g in groups) == [
        ("bat (alpha=1)", 2), ("bat (alpha=2)", 1), ("pgd_at (model=resnet18)", 1), ("pgd_at (model=wrn34_10)", 1)]


def test_report_lines_up_runs_on_different_class_subsets(tmp_path, capsys):
    """The paper's Table 4: PGD-AT on all classes and without some; per-class tables by class name."""
    def fake(name, method, names, per_class):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({
            "method": method, "seed": 0, "class_names": names, "num_test_samples": 10,
            **{f"{m}_{k}": 0.5 for m in ("std", "bndy", "rob") for k in ("avg", "worst")},
            **{f"{m}_per_class": per_class for m in ("std", "bndy", "rob")}}))
        OmegaConf.save({"seed": 0, "method": {"_target_": method}, "model": {"num_classes": len(names)},
                        "data": {"exclude_classes": names, "num_classes": len(names)}}, d / "config.yaml")

    fake("all", "pgd_at", ["a", "b", "c"], [0.1, 0.2, 0.3])
    fake("wo_b", "pgd_at", ["a", "c"], [0.05, 0.25])
    assert report_mod.main([str(tmp_path / "all"), str(tmp_path / "wo_b"), "--out", str(tmp_path / "r")]) == 0
    assert "Figures skipped" in capsys.readouterr().out
    text = (tmp_path / "r" / "report.md").read_text()
    assert "Per-class robust error" in text and "| Method | a | b | c |" in text
    assert "| pgd_at (data.exclude_classes=[\"a\", \"b\", \"c\"]) | 10.0 | 20.0 | 30.0 |" in text
    assert "| 5.0 | - | 25.0 |" in text
    assert not (tmp_path / "r" / "per_class_errors.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_config_error():
    """batlit.evaluate and batlit.analyze check ``device`` before loading the checkpoint."""
    from batlit.config import ConfigError, resolve_device

    with pytest.raises(ConfigError, match="device: 'cuda', but no CUDA GPU is available here"):
        resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_report_bad_input_is_one_line(tmp_path, capsys):
    assert report_mod.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert report_mod.main([str(tmp_path)]) == 2
    assert "no metrics.json under" in capsys.readouterr().err

def test_report_names_a_bad_baseline_as_such(sweep, tmp_path, capsys):
    assert report_mod.main([str(sweep), "--baseline", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert f"--baseline: '{tmp_path / 'nope'}' does not exist" in capsys.readouterr().err


def test_rho_is_dafa_on_accuracies():
    # accuracies: avg 0.5 -> 0.45 (−10%), worst 0.2 -> 0.3 (+50%): ρ = 0.5 − 0.1
    assert math.isclose(report_mod.rho(avg=0.55, worst=0.7, base_avg=0.5, base_worst=0.8), 0.4)
    assert math.isnan(report_mod.rho(0.5, 0.5, 0.5, 1.0))


def test_objective_floors_average_robust_accuracy():
    spec = OmegaConf.create({"split": "val", "metric": "rob_worst", "min_robust_accuracy": 0.4})
    good = {"val": {"rob_avg": 0.5, "rob_worst": 0.8}}
    poor = {"val": {"rob_avg": 0.7, "rob_worst": 0.6}}
    assert objective(good, spec) == 0.8
    assert math.isclose(objective(poor, spec), 1.1)  # below the floor: ranked after every feasible run
    assert objective({"val": None}, spec) is None
    assert objective({"rob_avg": 0.5, "rob_worst": 0.7}, OmegaConf.merge(spec, {"split": "test"})) == 0.7


def test_cw_margin_loss_and_attack():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 60.0, 1.0]])
    y = torch.tensor([0, 0, 0])
    # −max(z_y − max_{j≠y} z_j + κ, 0) with κ = 50: flat once a sample is wrong by more than κ
    assert torch.allclose(cw_margin(logits, y), torch.tensor([-52.0, -48.0, 0.0]))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.rand(8, 3, 2, 2)
    labels = torch.randint(0, 3, (8,))
    x_adv = pgd(model, x, labels, eps=0.1, step_size=0.05, steps=3, loss="cw")
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


@pytest.mark.slow  # a real Optuna sweep of several training runs: `make test-all` runs it
def test_optuna_sweep_minimises_the_objective(tmp_path):
    proc = run_cli("batlit.train", "-m", *TINY, "hparams_search=bat_optuna", "data.val_size=40",
                   "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
                   f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert set(result.best_params) == {"method.alpha", "method.beta"}
    values = []
    for job in ("0", "1"):
        record = json.loads((tmp_path / job / "metrics.json").read_text())
        assert record["method"] == "bat"
        values.append(objective(record, OmegaConf.create({"split": "val", "metric": "rob_worst",
                                                           "min_robust_accuracy": 0.3})))
    assert math.isclose(result.best_value, min(values), rel_tol=1e-6)


def test_optuna_sweep_without_a_validation_split_fails_first(tmp_path):
    proc = run_cli("batlit.train", "-m", *TINY, "hparams_search=bat_optuna", "hydra.sweeper.n_trials=1",
                   f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode != 0
    assert "objective.split=val needs a validation split" in proc.stderr
    assert not (tmp_path / "0" / "checkpoints").exists()


def test_optuna_sweep_that_never_validates_fails_first(tmp_path):
    """The quickstart validates every 5 epochs: with epochs=1 the objective would be None."""
    proc = run_cli("batlit.train", "-m", "experiment=quickstart", "hparams_search=bat_optuna", "epochs=1",
                   "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode != 0
    assert "ends before the first validation (trainer.check_val_every_n_epoch=5)" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "0" / "checkpoints").exists()
