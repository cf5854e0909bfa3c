"""The run-time estimate's arithmetic with a fixed clock (a gap found by scripts/mutants.py, docs/testing.md)."""

from __future__ import annotations

import pytest
import torch

import batlit.tools.cost as cost
from batlit.data import SyntheticDataModule
from batlit.methods import PGDAT
from batlit.models import small_cnn
from batlit.tools.precision_check import ATTACK, OPTIMIZER


def test_the_estimate_counts_one_validation_every_val_every_epochs(monkeypatch):
    monkeypatch.setattr(cost, "_timed", lambda fn, sync: 0.1 * cost.PROBE_IMAGES)  # 0.1 s per image, each piece
    dm = SyntheticDataModule(n_train=96, n_test=40, image_size=8, val_size=24, batch_size=16, seed=0)
    dm.setup("fit")
    method = PGDAT(small_cnn(num_classes=10, in_channels=3, width=4), attack=ATTACK, optimizer=OPTIMIZER)
    est = cost.estimate(method, dm, torch.device("cpu"), "32-true", epochs=10, val_every=4)
    assert est["train_epoch_s"] == pytest.approx(0.1 * 72) and est["val_s"] == pytest.approx(0.1 * 24)
    assert est["total_s"] == pytest.approx(10 * 7.2 + 2 * 2.4 + 0.1 * 40)  # validations after epochs 4 and 8
