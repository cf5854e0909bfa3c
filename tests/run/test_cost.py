"""The run-time estimate printed before training (batlit/tools/cost.py): a timed probe on a copy, and its
arithmetic with a fixed clock."""

from __future__ import annotations

import pytest
import torch

import batlit.tools.cost as cost
from batlit.tools.cost import LONG_CPU_RUN_HOURS, cost_line, estimate
from batlit.data import SyntheticDataModule
from batlit.methods import BAT, PGDAT
from batlit.models import small_cnn
from batlit.tools.precision_check import ATTACK, OPTIMIZER


def test_the_probe_times_the_run_and_leaves_it_untouched():
    dm = SyntheticDataModule(n_train=96, n_test=40, image_size=8, val_size=24, batch_size=16, seed=0)
    dm.setup("fit")
    method = BAT(small_cnn(num_classes=10, in_channels=3, width=4), attack=ATTACK, optimizer=OPTIMIZER)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    torch.manual_seed(123)
    est = estimate(method, dm, torch.device("cpu"), "32-true", epochs=10, val_every=5)
    after_rng = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after_rng, torch.rand(3))  # the run's random stream is where it was
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items())  # weights, BN statistics
    assert method.steps_to_boundary.update_count == 0  # the probe's attack updated its copy's metric only
    assert 0 < est["train_epoch_s"] < est["total_s"] and est["val_s"] > 0
    # 10 training epochs and 2 validations (every 5th epoch) of 24 images, then the test split
    assert est["total_s"] > 10 * est["train_epoch_s"] + 2 * est["val_s"]


def test_the_line_points_a_long_cpu_run_to_the_cpu_study_and_a_gpu():
    short = {"train_epoch_s": 30.0, "val_s": 5.0, "total_s": 3600.0}
    long = {"train_epoch_s": 900.0, "val_s": 60.0, "total_s": (LONG_CPU_RUN_HOURS + 1) * 3600}
    line = cost_line(short, 110, torch.device("cpu"), "bat, resnet18 on cpu, bf16-mixed")
    assert line == ("batlit: estimated 30 s per training epoch, 60 min for the whole run (110 epochs, validation "
                    "and test included; bat, resnet18 on cpu, bf16-mixed)")
    line = cost_line(long, 110, torch.device("cpu"), "bat")
    assert "15 min per training epoch, 3.0 h for the whole run" in line
    assert "experiment=study_cifar10_cpu" in line and "trainer=gpu" in line
    assert "study_cifar10_cpu" not in cost_line(long, 110, torch.device("cuda"), "bat")


def test_frl_s_validation_pass_before_every_epoch_is_counted_and_gairat_can_be_probed():
    from types import SimpleNamespace

    from batlit.methods import FRL, GAIRAT

    dm = SyntheticDataModule(n_train=64, n_test=24, image_size=8, val_size=24, batch_size=16, seed=0)
    dm.setup("fit")
    model = small_cnn(num_classes=10, in_channels=3, width=4)
    frl = FRL(model, attack=ATTACK, optimizer=OPTIMIZER)
    plain = BAT(small_cnn(num_classes=10, in_channels=3, width=4), attack=ATTACK, optimizer=OPTIMIZER)
    assert frl.needs_val_split and not plain.needs_val_split
    torch.manual_seed(0)
    est = estimate(frl, dm, torch.device("cpu"), "32-true", epochs=2)
    # per epoch: the training images' steps plus the 24 validation images under attack.test
    assert est["train_epoch_s"] > 0 and est["total_s"] > 2 * est["train_epoch_s"]
    gairat = GAIRAT(small_cnn(num_classes=10, in_channels=3, width=4), attack=ATTACK, optimizer=OPTIMIZER,
                    lam_schedule="linear", lam_max=1.0, begin_epoch=1)
    est = estimate(gairat, dm, torch.device("cpu"), "32-true", epochs=2, trainer=SimpleNamespace(max_epochs=2, current_epoch=0))
    assert est["total_s"] > 0


def test_the_estimate_counts_one_validation_every_val_every_epochs(monkeypatch):
    monkeypatch.setattr(cost, "_timed", lambda fn, sync: 0.1 * cost.PROBE_IMAGES)  # 0.1 s per image, each piece
    dm = SyntheticDataModule(n_train=96, n_test=40, image_size=8, val_size=24, batch_size=16, seed=0)
    dm.setup("fit")
    method = PGDAT(small_cnn(num_classes=10, in_channels=3, width=4), attack=ATTACK, optimizer=OPTIMIZER)
    est = cost.estimate(method, dm, torch.device("cpu"), "32-true", epochs=10, val_every=4)
    assert est["train_epoch_s"] == pytest.approx(0.1 * 72) and est["val_s"] == pytest.approx(0.1 * 24)
    assert est["total_s"] == pytest.approx(10 * 7.2 + 2 * 2.4 + 0.1 * 40)  # validations after epochs 4 and 8
