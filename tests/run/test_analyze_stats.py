"""batlit.analyze's statistics in-process on a model whose attack trajectories are known by hand
(gaps found by scripts/mutants.py, docs/testing.md; the CLI path is in cli/test_bat_cli.py)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from batlit.analyze import analyze


class Threshold(nn.Module):
    """logits (0, 10·(p − 0.35)) of the first pixel p: class 1 iff p > 0.35."""

    def forward(self, x):
        z = 10.0 * (x.flatten(1)[:, :1] - 0.35)
        return torch.cat([torch.zeros_like(z), z], 1)


def test_steps_survival_and_confusion_by_hand():
    # label 0 from p = 0.1 and 0.3: CE ascent by 0.1 per step crosses at k* = 3 and 1;
    # label 1 from p = 0.2 is wrong at k* = 0
    x = torch.tensor([0.1, 0.3, 0.2]).view(-1, 1, 1, 1)
    y = torch.tensor([0, 0, 1])
    cfg = OmegaConf.create({"source": {"eps": 1.0, "step_size": 0.1, "steps": 5, "loss": "ce"},
                            "target": {"eps": 1.0, "step_size": 0.1, "steps": 10}})
    torch.manual_seed(0)
    out = analyze(Threshold(), [(x, y)], 2, cfg, torch.device("cpu"), progress=False)
    src = out["source"]
    assert src["mean_steps_per_class"] == pytest.approx([2.0, 0.0]) and src["mean_steps"] == pytest.approx(4 / 3)
    # survival at evaluation k: the share of the class with k* > k; marks of S = 5: 0, 1, 2, 4
    assert src["survival"]["steps"] == [0, 1, 2, 4]
    assert src["survival"]["per_class"] == [pytest.approx([1.0, 0.5, 0.5, 0.0]), [0.0, 0.0, 0.0, 0.0]]
    # the 10-step PGD takes every label-0 image to class 1 and the label-1 image to class 0
    assert out["target"]["confusion"] == [[0, 2], [1, 0]]          # rows: true class
    assert out["target"]["target_distribution"] == pytest.approx([1 / 3, 2 / 3])
    assert out["robustness"]["std_per_class"] == pytest.approx([0.0, 1.0])
