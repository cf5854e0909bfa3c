"""StepsToBoundary on hand-counted steps (gaps found by scripts/mutants.py, docs/testing.md)."""

from __future__ import annotations

import math

import pytest
import torch

from batlit.metrics import StepsToBoundary


def test_steps_to_boundary_by_hand():
    # K = 10 steps; class 0: k* = 1, 10 (never), 4; class 1: k* = 7; class 2: no sample
    metric = StepsToBoundary(num_classes=3, max_steps=10)
    metric.update(torch.tensor([1, 10]), torch.tensor([0, 0]))
    metric.update(torch.tensor([4, 7]), torch.tensor([0, 1]))
    r = metric.compute()
    assert r["mean_per_class"][:2].tolist() == pytest.approx([5.0, 7.0]) and math.isnan(r["mean_per_class"][2])
    assert r["never_per_class"][:2].tolist() == pytest.approx([1 / 3, 0.0]) and math.isnan(r["never_per_class"][2])
    assert float(r["mean"]) == pytest.approx(22 / 4)   # over samples, not the mean of class means (6)
    assert float(r["never"]) == pytest.approx(1 / 4)   # k* = K counts as never misclassified
