"""FAT and GAIRAT: their distinctive computations on fixed inputs, and short runs through the CLI;
the training attack's own ε for every method."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F

from batlit.attacks import pgd
from batlit.methods import BAT, FAT, FATTRADES, GAIRAT, PGDAT, TRADES
from batlit.methods.fat import tau_at
from batlit.methods.gairat import gair_weights
from conftest import TINY, run_cli, train
from conftest import linear_model as _model

ATTACK = {"eps": 8 / 255, "train": {"steps": 10, "step_size": 2 / 255},
          "val": {"steps": 2, "step_size": 2 / 255}, "test": {"steps": 2, "step_size": 2 / 255}}
OPT = {"name": "sgd", "lr": 0.1}


def _at_epoch(monkeypatch, method, epoch):
    """Pretend the trainer is at this 0-based epoch."""
    monkeypatch.setattr(type(method), "current_epoch", property(lambda self: epoch))


def test_fat_dynamic_tau_schedules():
    fat, fat_trades = FAT(_model(), attack=ATTACK, optimizer=OPT), FATTRADES(_model(), attack=ATTACK, optimizer=OPT)
    assert [tau_at(fat.tau_schedule, e) for e in (1, 50, 51, 90, 91, 120)] == [0, 0, 1, 1, 2, 2]
    assert [tau_at(fat_trades.tau_schedule, e) for e in (30, 31, 50, 51, 70, 71)] == [0, 1, 1, 2, 2, 3]
    with pytest.raises(ValueError, match="method.tau_schedule"):
        FAT(_model(), attack=ATTACK, optimizer=OPT, tau_schedule=[[0, 1]])


@pytest.mark.parametrize("cls,loss,init,omega", [(FAT, "ce", "uniform", 0.001), (FATTRADES, "kl", "normal", 0.0)])
def test_fat_attack_is_the_early_stopped_first_adv_with_the_epochs_tau(monkeypatch, cls, loss, init, omega):
    method = cls(_model(), attack=ATTACK, optimizer=OPT)
    seen = {}

    def fake_boundary_pgd(model, x, y, **kwargs):
        seen.update(kwargs)
        from batlit.attacks import boundary_pgd
        return boundary_pgd(model, x, y, **kwargs)

    monkeypatch.setattr("batlit.methods.fat.boundary_pgd", fake_boundary_pgd)
    _at_epoch(monkeypatch, method, 95)  # 1-based epoch 96
    x, y = torch.rand(8, 3, 4, 4), torch.randint(0, 4, (8,))
    x_adv = method.perturb(x, y)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert seen["loss"] == loss and seen["init"] == init and seen["step_noise_std"] == omega
    assert seen["tau"] == (2 if cls is FAT else 3) and seen["steps"] == 10
    out = method.objective(x, y, x_adv)
    if cls is FAT:
        torch.testing.assert_close(out["loss"], F.cross_entropy(method.model(x_adv), y))
    else:
        assert set(out) == {"loss", "natural", "robust_kl"}


def test_gair_tanh_weights_by_hand():
    kappa = torch.tensor([0, 5, 10])
    raw = torch.tensor([(math.tanh(-1 + 5 - k) + 1) / 2 for k in (0, 5, 10)])
    torch.testing.assert_close(gair_weights(kappa, 10, -1.0), raw * 3 / raw.sum())
    assert gair_weights(kappa, 10, -1.0).sum().item() == pytest.approx(3.0)
    torch.testing.assert_close(gair_weights(kappa, 10, math.inf), torch.ones(3))  # lambda = inf: PGD-AT
    disc = torch.tensor([11 / 11, 6 / 11, 1 / 11])
    torch.testing.assert_close(gair_weights(kappa, 10, -1.0, "discrete"), disc * 3 / disc.sum())
    sig = torch.sigmoid(torch.tensor([4.0, -1.0, -6.0]))
    torch.testing.assert_close(gair_weights(kappa, 10, -1.0, "sigmoid"), sig * 3 / sig.sum())


def test_gairat_runs_all_steps_and_weights_only_after_burn_in(monkeypatch):
    model = _model()
    predictions = []
    hook = model.register_forward_hook(lambda m, args, out: predictions.append(out.argmax(1)))
    method = GAIRAT(model, attack=ATTACK, optimizer=OPT, begin_epoch=60)
    x, y = torch.rand(16, 3, 4, 4), torch.randint(0, 4, (16,))
    torch.manual_seed(7)
    x_adv, kappa = method.perturb(x, y)
    hook.remove()
    assert len(predictions) == 10  # GA-PGD: all K steps, no early stop
    torch.manual_seed(7)  # ... and nothing stops: x_adv is PGD-10's from the same uniform start
    torch.testing.assert_close(x_adv, pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=10, init="uniform"))
    # kappa: how many of the K evaluated iterates x_0 ... x_{K-1} each sample was right on
    assert kappa.dtype == torch.long
    assert kappa.tolist() == (torch.stack(predictions) == y).sum(0).tolist()
    assert 0 < kappa.float().mean() < 10  # some iterates right, some wrong: the count is not trivial
    ce = F.cross_entropy(model(x_adv), y, reduction="none")
    _at_epoch(monkeypatch, method, 58)  # 1-based 59: still burn-in
    torch.testing.assert_close(method.objective(x, y, (x_adv, kappa))["loss"], ce.mean())
    _at_epoch(monkeypatch, method, 59)  # 1-based 60: weighted
    weights = gair_weights(kappa, 10, -1.0)
    torch.testing.assert_close(method.objective(x, y, (x_adv, kappa))["loss"], (weights * ce).mean())
    assert method.lam_at(100) == -1.0
    piecewise = GAIRAT(_model(), attack=ATTACK, optimizer=OPT, lam_schedule="piecewise")
    assert [piecewise.lam_at(e) for e in (60, 90, 110)] == [-1.0, -2.0, -2.5]
    with pytest.raises(ValueError, match="method.lam_max"):
        GAIRAT(_model(), attack=ATTACK, optimizer=OPT, lam_schedule="linear")


def test_fat_and_fat_trades_train_through_the_cli(tmp_path):
    proc = run_cli("batlit.train", "-m", "method=fat,fat_trades", *TINY, f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, name in enumerate(("fat", "fat_trades")):
        record = json.loads((tmp_path / str(job) / "metrics.json").read_text())
        assert record["method"] == name and record["epochs"] == 1
        rows = list(csv.DictReader((tmp_path / str(job) / "csv" / "metrics.csv").open()))
        assert [float(r["train/tau"]) for r in rows if r.get("train/tau")] == [0.0]  # epoch 1: τ = 0 in both schedules


def test_gairat_trains_through_the_cli_with_weights(tmp_path):
    record = train(tmp_path, "method=gairat", "method.begin_epoch=1", "epochs=2")
    assert record["method"] == "gairat"
    assert "train/weight_max" in (tmp_path / "csv" / "metrics.csv").read_text()


@pytest.mark.parametrize("cls", [PGDAT, TRADES, BAT, FAT, GAIRAT])
def test_training_attack_uses_attack_train_eps_and_evaluation_attack_eps(cls):
    """linf_trades trains at ε = 0.031 and tests at 8/255: attack.train.eps bounds only the training
    attack, attack.eps the validation and test attacks (and the training one when train.eps is unset)."""
    x, y = torch.rand(16, 3, 4, 4) * 0.5 + 0.25, torch.randint(0, 4, (16,))  # away from [0, 1]'s edges

    def largest_step(examples):
        if isinstance(examples, dict):
            examples = [v for k, v in examples.items() if k != "x"]
        tensors = [t for t in (examples if isinstance(examples, (tuple, list)) else [examples]) if t.is_floating_point()]
        return max(float((t - x).abs().max()) for t in tensors)

    train_eps = {**ATTACK, "train": {**ATTACK["train"], "eps": 0.01, "step_size": 0.005}}
    method = cls(_model(), attack=train_eps, optimizer=OPT)
    assert 0.005 <= largest_step(method.perturb(x, y)) <= 0.01 + 1e-6
    assert 0.01 + 1e-3 < float((method.evaluation_attack(x, y, "test") - x).abs().max()) <= 8 / 255 + 1e-6
    unset = cls(_model(), attack={**ATTACK, "train": {**ATTACK["train"], "eps": None}}, optimizer=OPT)
    assert unset.train_attack["eps"] == 8 / 255


@pytest.mark.parametrize("function", ["tanh", "sigmoid"])
def test_gairat_needs_two_attack_steps_for_its_weights(function):
    """The weights divide by K // 2 (GAIR.py): K = 1 would give NaN weights at the burn-in epoch,
    so it is refused when the method is built, not 60 epochs in."""
    one_step = {**ATTACK, "train": {"steps": 1, "step_size": 8 / 255}}
    with pytest.raises(ValueError, match="attack.train.steps"):
        GAIRAT(_model(), attack=one_step, optimizer=OPT, weight_function=function)
    GAIRAT(_model(), attack=one_step, optimizer=OPT, weight_function="discrete")  # no division by K // 2


def test_evaluation_attack_under_inference_mode_is_one_clear_error():
    """A plain ``L.Trainer()`` validates in inference mode, where no input gradient exists."""
    method = PGDAT(_model(), attack=ATTACK, optimizer=OPT)
    x, y = torch.rand(4, 3, 4, 4), torch.randint(0, 4, (4,))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode=False"):
        method.evaluation_attack(x, y, "val")
