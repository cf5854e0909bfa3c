"""FRL: the multiplier update, weight and margin mapping on fixed inputs; fine-tuning through the CLI."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from batlit.checkpoint.hot_start import load_hot_start
from batlit.config import ConfigError
from batlit.methods import FRL
from batlit.methods.frl import class_margins, class_weights, normalize_lambda
from conftest import TINY, run_cli, train
from conftest import linear_model as _model

ATTACK = {"eps": 8 / 255, "train": {"steps": 3, "step_size": 2 / 255},
          "val": {"steps": 2, "step_size": 2 / 255}, "test": {"steps": 2, "step_size": 2 / 255}}
OPT = {"name": "sgd", "lr": 0.001}


def test_normalize_lambda_clamps_and_rescales():
    torch.testing.assert_close(normalize_lambda(torch.tensor([-0.2, 0.1, 0.2]), 0.5), torch.tensor([0.0, 0.1, 0.2]))
    torch.testing.assert_close(normalize_lambda(torch.tensor([0.4, 0.6, -1.0]), 0.5), torch.tensor([0.2, 0.3, 0.0]))


def test_class_weights_and_margins_by_hand():
    lam = torch.tensor([0.3, 0.0, 0.1, 0.0])
    # w_c = 1/K + lam_c - sum(lam)/K = 0.25 + lam_c - 0.1
    torch.testing.assert_close(class_weights(lam), torch.tensor([0.45, 0.15, 0.25, 0.15]))
    assert class_weights(lam).sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(class_weights(torch.zeros(4)), torch.full((4,), 0.25))
    m = class_margins(torch.tensor([0.0, 0.2, -1.0, 5.0]), 3.0)
    torch.testing.assert_close(m, torch.tensor([1.0, torch.exp(torch.tensor(0.4)).item(), 0.98, 3.0]))


def test_multiplier_update_from_validation_errors():
    method = FRL(_model(), attack=ATTACK, optimizer=OPT, bound=0.05, rate1=0.05, rate2=0.2, lim=0.5)
    std = torch.tensor([0.40, 0.10, 0.20, 0.10])
    bndy = torch.tensor([0.50, 0.20, 0.30, 0.20])
    method.update_multipliers(std, bndy, std_total=0.2, bndy_total=0.3, epoch=1)
    # gamma_nat = std - 0.2 - 0.05 = [0.15, -0.15, -0.05, -0.15] -> lam_nat = clamp(0.05 * gamma) = [0.0075, 0, 0, 0]
    torch.testing.assert_close(method.lambda_nat, torch.tensor([0.0075, 0.0, 0.0, 0.0]))
    # gamma_bndy = bndy - 0.3 - 0.05 = [0.15, -0.15, -0.05, -0.15]; lam_bndy = clamp(2 * 0.05 * gamma)
    torch.testing.assert_close(method.lambda_bndy, torch.tensor([0.015, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(method.lambda_eps, 0.2 * torch.tensor([0.15, -0.15, -0.05, -0.15]))
    # epoch 40: r1 = 0.025; gamma_nat = 40·std − 0.05 = [15.95, 3.95, 7.95, 3.95], so
    # lam_nat + r1·gamma = [0.40625, 0.09875, 0.19875, 0.09875] (sum 0.8025 > lim) is rescaled to sum 0.5
    method.update_multipliers(std * 40, bndy, std_total=0.0, bndy_total=0.3, epoch=40)
    torch.testing.assert_close(method.lambda_nat, torch.tensor([0.40625, 0.09875, 0.19875, 0.09875]) * (0.5 / 0.8025))
    reweight_only = FRL(_model(), attack=ATTACK, optimizer=OPT, remargin=False)
    reweight_only.update_multipliers(std, bndy, 0.2, 0.3, epoch=1)
    assert torch.count_nonzero(reweight_only.lambda_eps) == 0


def test_weights_and_margins_enter_the_loss_and_attack():
    method = FRL(_model(), attack=ATTACK, optimizer=OPT)
    method.lambda_nat.copy_(torch.tensor([0.3, 0.0, 0.0, 0.0]))
    method.lambda_eps.copy_(torch.tensor([0.2, 0.0, -1.0, 0.0]))
    x, y = torch.rand(8, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    x_adv = method.perturb(x, y)
    budget = 8 / 255 * class_margins(method.lambda_eps, 3.0)[y]
    assert torch.all((x_adv - x).abs().flatten(1).max(1).values <= budget + 1e-6)
    w_nat, _ = method.sample_weights(y)
    torch.testing.assert_close(w_nat, class_weights(method.lambda_nat)[y])
    out = method.objective(x, y, x_adv)
    ce = nn.functional.cross_entropy(method.model(x), y, reduction="none")
    torch.testing.assert_close(out["natural"], (w_nat * ce).sum() / w_nat.sum())


def test_init_ckpt_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="method.init_ckpt: no checkpoint"):
        load_hot_start(FRL(_model(), attack=ATTACK, optimizer=OPT), str(tmp_path / "none.ckpt"))


def test_frl_fine_tunes_a_pgd_at_checkpoint_through_the_cli(tmp_path, hot_start):
    ckpt = hot_start / "checkpoints" / "last.ckpt"
    # the hot start's split (data.val_size=40, the same seed): FRL validates on images it never trained on
    record = train(tmp_path / "frl", "method=frl_rwrm", f"method.init_ckpt={ckpt}", "data.val_size=40", "epochs=2")
    assert record["method"] == "frl_rwrm"
    rows = list(csv.DictReader((tmp_path / "frl" / "csv" / "metrics.csv").open()))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"classwise/lambda_nat/class0", "classwise/lambda_bndy/class9", "classwise/lambda_eps/class3"} <= logged
    # another architecture: refused naming the key (the CLI prints such a ConfigError as one line)
    from batlit.models import resnet18

    with pytest.raises(ConfigError, match="method.init_ckpt: .* holds another architecture"):
        load_hot_start(FRL(resnet18(num_classes=10, width=8), attack=ATTACK, optimizer=OPT), str(ckpt))
    # no validation split: one line, before training
    proc = run_cli("batlit.train", *TINY, "method=frl_rw", f"method.init_ckpt={ckpt}",
                   f"hydra.run.dir={tmp_path / 'noval'}")
    assert proc.returncode == 2 and "data.val_size" in proc.stderr, proc.stderr[-1500:]


def test_overall_validation_errors_weigh_classes_by_their_counts(monkeypatch):
    """The overall std/bndy errors FRL's gaps are measured against are over the split's samples: a
    class absent from the split weighs nothing (it counted as one sample before)."""
    from types import SimpleNamespace

    from lightning.pytorch import LightningModule

    method = FRL(_model(), attack=ATTACK, optimizer=OPT)
    x, y = torch.rand(6, 3, 4, 4), torch.tensor([0, 0, 0, 1, 1, 2])  # class 3 absent
    loader = [(x[:3], y[:3]), (x[3:], y[3:])]
    monkeypatch.setattr(LightningModule, "trainer", property(
        lambda self: SimpleNamespace(datamodule=SimpleNamespace(val_dataloader=lambda: loader), world_size=1)))
    std, bndy, std_total, bndy_total = method.validation_errors()
    wrong = (method.model(x).argmax(1) != y).float()
    assert std_total == pytest.approx(float(wrong.mean()))
    counts = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert bndy_total == pytest.approx(float((bndy * counts).sum() / 6))
    assert std[3] == 0 and bndy[3] == 0
