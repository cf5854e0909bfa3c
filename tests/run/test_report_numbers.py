"""batlit.report's grouping and numbers, and batlit.report.results' JSON and table, on hand-made runs
(gaps found by scripts/mutants.py, docs/testing.md; the CLI path is in cli/test_evaluate_report.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from batlit.report.tables import Group, Run, cost_table, group_runs
from batlit.report.results import format_table, results_to_json


def _run(path: Path, seed: int, lr: float = 0.1, **metrics) -> Run:
    config = {"seed": seed, "data.seed": seed, "method._target_": "batlit.methods.PGDAT", "optimizer.lr": lr}
    return Run(path, {"method": "pgd_at", **metrics}, config)


def test_runs_that_differ_in_seed_and_data_seed_only_share_a_group(tmp_path):
    runs = [_run(tmp_path / "a", 0), _run(tmp_path / "b", 1), _run(tmp_path / "c", 0, lr=0.01)]
    groups = group_runs(runs)
    assert sorted((g.label, len(g.runs)) for g in groups) == [("pgd_at (optimizer.lr=0.01)", 1),
                                                               ("pgd_at (optimizer.lr=0.1)", 2)]


def test_per_class_errors_are_the_mean_over_seeds(tmp_path):
    group = Group("g", [_run(tmp_path / "a", 0, rob_per_class=[0.2, None]),
                        _run(tmp_path / "b", 1, rob_per_class=[0.4, 0.6])])
    mean = group.per_class("rob")
    assert mean[0] == pytest.approx(0.3) and mean[1] == pytest.approx(0.6)


def test_the_cost_table_gives_the_fastest_and_the_median_epoch(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,perf/epoch_seconds,perf/train_images_per_s\n0,10.0,50\n1,30.0,20\n1,,\n2,12.0,40\n")
    _, rows, numbers = cost_table([Group("g", [_run(tmp_path, 0)])])
    assert numbers["g"] == {"epochs_timed": 3, "epoch_seconds_min": 10.0, "epoch_seconds_median": 12.0,
                            "train_images_per_s_median": 40.0}
    assert rows == [["g", "3", "10.0", "12.0", "40", "-"]]


def test_the_cost_table_gives_each_runs_wall_time_and_the_studys(tmp_path):
    """Run wall = fit + test of metrics.json wall_seconds, evaluations from their JSONs, mean per
    run in minutes; the study's total sums every run and evaluation."""
    from batlit.report.tables import study_wall_seconds

    for name in ("a", "b"):
        (tmp_path / name / "csv").mkdir(parents=True)
        (tmp_path / name / "csv" / "metrics.csv").write_text("epoch,perf/epoch_seconds,perf/train_images_per_s\n0,10.0,50\n")
    timed = _run(tmp_path / "a", 0, wall_seconds={"fit": 540.0, "test": 60.0})
    timed.evals = {"autoattack": {"seconds": 240.0}, "pgd20": {"seconds": 12.0}}
    untimed = _run(tmp_path / "b", 1)
    untimed.evals = {"autoattack": {"seconds": 120.0}}
    header, rows, numbers = cost_table([Group("g", [timed, untimed])])
    assert header[-3:] == ["Run wall (min)", "autoattack (s)", "pgd20 (s)"]
    assert rows[0][-3:] == ["10.0 (1 of 2)", "180", "12"]
    assert numbers["g"]["run_wall_seconds_mean"] == 600.0 and numbers["g"]["autoattack_seconds_mean"] == 180.0
    assert study_wall_seconds([Group("g", [timed, untimed])]) == (600.0 + 240.0 + 12.0 + 120.0, 1, 2)


def test_results_to_json_names_the_worst_class_and_writes_null_for_an_unseen_one():
    results = {"rob_worst_class": torch.tensor(1), "rob_avg": torch.tensor(0.25),
               "rob_per_class": torch.tensor([0.5, float("nan")]), "count_per_class": torch.tensor([4, 0])}
    out = results_to_json(results, ["cat", "dog"])
    assert out == {"rob_worst_class": "dog", "rob_avg": 0.25, "rob_per_class": [0.5, None], "count_per_class": [4, 0]}


def test_the_table_prints_percentages():
    summary = {f"{m}_per_class": [0.25, None] for m in ("std", "bndy", "rob")}
    summary.update({f"{m}_avg": 0.25 for m in ("std", "bndy", "rob")})
    summary.update({f"{m}_worst": 0.5 for m in ("std", "bndy", "rob")})
    summary.update({f"{m}_worst_class": "cat" for m in ("std", "bndy", "rob")}, count_per_class=[4, 0])
    lines = format_table(summary, ["cat", "dog"]).splitlines()
    assert lines[2].split() == ["cat", "25.00", "25.00", "25.00", "(n=4)"]
    assert lines[3].split() == ["dog", "-", "-", "-", "(n=0)"]
    assert lines[-1].split() == ["worst", "50.00", "(cat)", "50.00", "(cat)", "50.00", "(cat)"]
    assert not math.isnan(float(lines[-2].split()[1]))


def test_the_noise_line_gives_the_binomial_standard_error_of_the_smallest_class(tmp_path):
    from batlit.report.tables import noise_note

    run = _run(tmp_path, 0, count_per_class=[200, 196, 200])
    run.evals = {"autoattack": {"count_per_class": [100, 100, 99]}}
    assert noise_note([run]) == ("Noise: one class's error has a binomial standard error of at most 50/√n points "
                                 "on n images: ±3.6 on the test split (196 images in its smallest class); "
                                 "±5.0 under autoattack (99 images a class).")
    assert noise_note([_run(tmp_path, 1)]) == ""


def test_fast_path_switches_do_not_split_a_group(tmp_path):
    """Runs trained before model.fold_batchnorm existed (no key) and after (true) are the same
    experiment: switches that change how, not what, is trained never name a group."""
    old = _run(tmp_path / "a", 0)
    new = _run(tmp_path / "b", 1)
    new.config.update({"model.fold_batchnorm": True, "model.channels_last": True, "data.on_device": False})
    groups = group_runs([old, new])
    assert [(g.label, len(g.runs)) for g in groups] == [("pgd_at", 2)]
