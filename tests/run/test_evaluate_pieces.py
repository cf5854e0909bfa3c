"""batlit.evaluate's pieces in-process, on a hand-checkable model and made-up attacks
(gaps found by scripts/mutants.py, docs/testing.md; the CLI path is in cli/test_evaluate_report.py)."""

from __future__ import annotations

import csv

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from batlit.config import ConfigError
from batlit.evaluate import build_attack, check_config, evaluate, write_csv


class OnePixel(nn.Module):
    """Two classes by the first pixel: class 1 iff p > 0.5."""

    def forward(self, x):
        z = 10.0 * (x.flatten(1)[:, :1] - 0.5)
        return torch.cat([torch.zeros_like(z), z], 1)


def _flip_where(targets: list[float]):
    """An 'attack' that moves sample i (of the batch it is given) to the pixel value targets[i]."""
    def attack(x, y):
        return torch.tensor([targets[int(round(float(v) * 100))] for v in x.flatten(1)[:, 0]]).view(-1, 1, 1, 1)
    return attack


def test_only_samples_still_right_are_attacked_and_each_component_counts_its_survivors():
    # pixels (their own ids: 0.1 .. 0.9); labels; clean predictions: 0, 0, 1, 1, 0
    x = torch.tensor([0.1, 0.2, 0.7, 0.8, 0.3]).view(-1, 1, 1, 1)
    y = torch.tensor([0, 0, 1, 0, 1])          # samples 3 and 4 are wrong on clean images
    table = [0.0] * 100
    table[10], table[20], table[70] = 0.9, 0.2, 0.7   # first attack: flips sample 0 only
    table[80], table[30] = 0.2, 0.9                   # would "fix" the clean-wrong samples if attacked
    first = _flip_where(table)
    second_table = [0.0] * 100
    second_table[20], second_table[70] = 0.2, 0.2     # second attack: flips sample 2 (class 1)
    second = _flip_where(second_table)
    out = evaluate(OnePixel(), [(x, y)], [("A", first), ("B", second)], 2, torch.device("cpu"), progress=False)
    (name_a, per_class_a, acc_a), (name_b, per_class_b, acc_b) = out["robust_after"]
    assert (name_a, name_b) == ("A", "B")
    assert per_class_a == pytest.approx([1 / 3, 1 / 2]) and acc_a == pytest.approx(2 / 5)
    assert per_class_b == pytest.approx([1 / 3, 0.0]) and acc_b == pytest.approx(1 / 5)
    r = out["results"]
    assert r["std_per_class"].tolist() == pytest.approx([1 / 3, 1 / 2])
    assert r["bndy_per_class"].tolist() == pytest.approx([1 / 3, 1 / 2])


def test_pgd_step_defaults_to_a_quarter_of_eps():
    spec = OmegaConf.create({"kind": "pgd", "steps": 20, "step_size": None, "loss": "ce"})
    [(name, attack)] = build_attack(spec, OnePixel(), 0.032, 2, 0)
    assert name == "PGD-20 (ce)" and attack.kwargs["step_size"] == pytest.approx(0.008)


def test_the_csv_rows_hold_accuracies_and_errors():
    summary = {"std_per_class": [0.1, 0.3], "bndy_per_class": [0.2, 0.4], "rob_per_class": [0.3, 0.7],
               "count_per_class": [10, 20], "std_avg": 0.2, "bndy_avg": 0.3, "rob_avg": 0.5,
               "std_worst": 0.3, "bndy_worst": 0.4, "rob_worst": 0.7}
    path = __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "eval.csv"
    write_csv(path, summary, ["a", "b"])
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["class", "n", "clean_acc", "robust_acc", "std_error", "bndy_error", "rob_error"]
    assert rows[1] == ["a", "10", "90.00", "70.00", "10.00", "20.00", "30.00"]
    assert rows[3] == ["avg", "30", "80.00", "50.00", "20.00", "30.00", "50.00"]
    assert rows[4] == ["worst", "", "70.00", "30.00", "30.00", "40.00", "70.00"]


@pytest.mark.parametrize("steps", [0, -1, 1.5])
def test_attack_steps_below_one_is_a_config_error(tmp_path, steps):
    (tmp_path / "x.ckpt").write_bytes(b"")
    cfg = OmegaConf.create({"ckpt": str(tmp_path / "x.ckpt"), "device": "cpu", "n_samples": None, "batch_size": 8,
                            "eps": None, "attack": {"kind": "pgd", "loss": "ce", "steps": steps, "step_size": None}})
    with pytest.raises(ConfigError, match="attack.steps must be an integer >= 1"):
        check_config(cfg)
    check_config(OmegaConf.merge(cfg, {"attack": {"steps": 1}}))
