"""The methods' plumbing on hand-made inputs: which examples, which options, which numbers
(gaps found by scripts/mutants.py, docs/testing.md)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningModule
from torch import nn

import batlit.methods.classwise as classwise
from batlit.attacks import pgd
from batlit.methods import BAT, CFA, FAT, FRL, GAIRAT, PGDAT, TRADES
from batlit.methods.frl import class_margins
from conftest import linear_model as _model

ATTACK = {"eps": 8 / 255, "train": {"steps": 3, "step_size": 2 / 255},
          "val": {"steps": 2, "step_size": 3 / 255}, "test": {"steps": 4, "step_size": 1 / 255}}
OPT = {"name": "sgd", "lr": 0.1}


class OnePixel(nn.Module):
    """Two classes by the first pixel: class 1 iff p > 0.5."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        z = self.w * (x.flatten(1)[:, :1] - 0.5)
        return torch.cat([torch.zeros_like(z), z], 1)


def _pixels(values):
    return torch.tensor(values).view(-1, 1, 1, 1)


@pytest.fixture
def trainer(monkeypatch):
    """A stand-in trainer (epoch, max_epochs, validation batches) for methods built outside Lightning."""
    state = {"t": SimpleNamespace(current_epoch=0, max_epochs=100, world_size=1, num_training_batches=1,
                                  datamodule=SimpleNamespace(val_dataloader=lambda: []))}
    monkeypatch.setattr(LightningModule, "trainer", property(lambda self: state["t"]))
    monkeypatch.setattr(LightningModule, "current_epoch", property(lambda self: state["t"].current_epoch))
    monkeypatch.setattr(LightningModule, "global_rank", property(lambda self: 0))

    def set_(**kw):
        for k, v in kw.items():
            setattr(state["t"], k, v)
    return set_


# ---- base: the class-wise evaluation and the optimiser ---------------------------------------------

def test_validation_step_feeds_clean_and_adversarial_predictions_to_the_metric_and_confusion():
    method = PGDAT(OnePixel(), attack=ATTACK, optimizer=OPT)
    # (label, clean pixel, adversarial pixel): class 0 right then wrong, wrong clean;
    # class 1 right and robust, right then wrong
    y = torch.tensor([0, 0, 1, 1])
    x, x_adv = _pixels([0.2, 0.8, 0.9, 0.9]), _pixels([0.7, 0.8, 0.9, 0.1])
    method.evaluation_attack = lambda xx, yy, phase: x_adv
    method._robustness_step((x, y), "val")
    r = method._robustness_results("val")
    assert r["std_per_class"].tolist() == [0.5, 0.0] and r["bndy_per_class"].tolist() == [0.5, 0.5]
    assert r["adv_confusion"].tolist() == [[0, 2], [1, 1]]  # rows: true class, columns: adversarial prediction


def test_sgd_takes_every_optimizer_setting():
    method = PGDAT(_model(), attack=ATTACK, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.8,
                                                        "weight_decay": 5e-4, "nesterov": True})
    group = method.configure_optimizers().param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.05, 0.8, 5e-4, True)


# ---- the attacks each method asks for ------------------------------------------------------------------

def _same_seed(fn_a, fn_b, seed=5):
    torch.manual_seed(seed)
    a = fn_a()
    torch.manual_seed(seed)
    return a, fn_b()


def test_pgd_at_attacks_from_a_uniform_start():
    method = PGDAT(_model(), attack=ATTACK, optimizer=OPT)
    x, y = torch.rand(8, 3, 4, 4), torch.randint(0, 4, (8,))
    ours, expected = _same_seed(lambda: method.perturb(x, y), lambda: pgd(
        method.model, x, y, eps=8 / 255, step_size=2 / 255, steps=3, loss="ce", init="uniform"))
    torch.testing.assert_close(ours, expected)


def test_trades_attack_starts_unclamped_as_the_authors():
    method = TRADES(_model(), attack=ATTACK, optimizer=OPT)
    x, y = torch.rand(8, 3, 4, 4), torch.randint(0, 4, (8,))
    x[:, :, 0, :] = 0.0  # saturated pixels: a clamped start would differ
    x[:, :, 3, :] = 1.0
    ours, expected = _same_seed(lambda: method.perturb(x, y), lambda: pgd(
        method.model, x, y, eps=8 / 255, step_size=2 / 255, steps=3, loss="kl", init="normal", init_std=0.001,
        project_start=False))
    torch.testing.assert_close(ours, expected)


def test_bat_fixed_source_attacks_with_trades_kl():
    method = BAT(_model(), attack=ATTACK, optimizer=OPT, source="fixed", target=["x_adv"])
    x, y = torch.rand(8, 3, 4, 4), torch.randint(0, 4, (8,))
    ours, expected = _same_seed(lambda: method.perturb(x, y)["x_adv"], lambda: pgd(
        method.model, x, y, eps=8 / 255, step_size=2 / 255, steps=3, loss="kl", init="normal", init_std=0.001))
    torch.testing.assert_close(ours, expected)


def test_frl_validation_errors_use_attack_test(trainer, monkeypatch):
    seen = []
    monkeypatch.setattr(classwise, "pgd", lambda model, x, y, **kw: seen.append(kw) or x)
    method = FRL(_model(), attack=ATTACK, optimizer=OPT)
    method.validation_attack(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), torch.Generator())
    assert (seen[0]["steps"], seen[0]["step_size"], seen[0]["eps"]) == (4, 1 / 255, 8 / 255)


# ---- GAIRAT's and FRL's schedules and statistics -------------------------------------------------------

def test_gairat_linear_lambda_goes_from_lam_max_down_to_lam(trainer):
    method = GAIRAT(_model(), attack=ATTACK, optimizer=OPT, lam=-1.0, lam_schedule="linear", lam_max=1.0)
    trainer(max_epochs=100)
    assert [method.lam_at(e) for e in (0, 50, 100)] == pytest.approx([1.0, 0.0, -1.0])


def test_frl_rate1_halves_every_halve_every_epochs():
    method = FRL(_model(), attack=ATTACK, optimizer=OPT, bound=0.0, rate1=0.05, halve_every=40, remargin=False)
    std = torch.tensor([0.4, 0.2, 0.2, 0.2])
    method.update_multipliers(std, torch.zeros(4), std_total=0.25, bndy_total=0.0, epoch=80)
    # gamma_nat = std - 0.25 = [0.15, -0.05, ...]; r1 = 0.05 / 2^(80 // 40) = 0.0125
    torch.testing.assert_close(method.lambda_nat, torch.tensor([0.0125 * 0.15, 0.0, 0.0, 0.0]))


def test_frl_validation_errors_count_boundary_errors_of_clean_right_samples_only(trainer):
    method = FRL(OnePixel(), attack=ATTACK, optimizer=OPT)
    y = torch.tensor([0, 0, 0, 1])
    x, x_adv = _pixels([0.2, 0.8, 0.3, 0.9]), _pixels([0.7, 0.9, 0.3, 0.1])
    trainer(datamodule=SimpleNamespace(val_dataloader=lambda: [(x, y)]))
    method.validation_attack = lambda xx, yy, generator, phase="test": x_adv
    std, bndy, std_total, bndy_total = method.validation_errors(1)
    assert std.tolist() == pytest.approx([1 / 3, 0.0]) and bndy.tolist() == pytest.approx([1 / 3, 1.0])
    assert (float(std_total), float(bndy_total)) == pytest.approx((1 / 4, 2 / 4))


def test_frl_remargin_step_is_a_quarter_of_the_largest_class_eps():
    method = FRL(_model(), attack=ATTACK, optimizer=OPT)
    method.lambda_eps.copy_(torch.tensor([0.2, 0.0, -1.0, 0.1]))
    y = torch.tensor([0, 1, 2, 3])
    eps, step = method.attack_budget(y)
    margins = class_margins(method.lambda_eps, 3.0)
    torch.testing.assert_close(eps, 8 / 255 * margins[y])
    assert float(step) == pytest.approx(8 / 255 * float(margins.max()) / 4)


# ---- CFA's FAWA gate ---------------------------------------------------------------------------------

def test_fawa_takes_a_model_whose_worst_class_is_exactly_at_the_threshold(trainer, monkeypatch):
    method = CFA(_model(), attack=ATTACK, optimizer=OPT, threshold=0.5)
    with torch.no_grad():
        method.model[1].weight.add_(1.0)  # the averaged model starts as a copy: make them differ
    monkeypatch.setattr(method, "validation_sums", lambda fn, names, epoch: (
        {"correct": torch.tensor([1.0, 2.0, 3.0, 4.0])}, torch.tensor([2.0, 2.0, 3.0, 4.0])))
    method.fawa_step(1)  # worst class: 1 of 2 right = 0.5 = threshold
    assert bool(method.fawa_started) and method.reported_weights == "averaged_model"
    torch.testing.assert_close(method.averaged_model[1].weight, method.model[1].weight)


# ---- hot starts take the weights the run reported ------------------------------------------------------

def test_a_hot_start_loads_the_reported_averaged_weights(hot_start, tmp_path):
    ckpt = torch.load(hot_start / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    for name in [k for k in state if k.startswith("model.")]:
        state["averaged_model." + name[len("model."):]] = state[name] + 1.0
    ckpt["batlit"]["reported_weights"] = "averaged_model"
    path = tmp_path / "averaged.ckpt"
    torch.save(ckpt, path)
    from batlit.checkpoint.store import load_run

    reference = load_run(path).model  # evaluate's view of the checkpoint: the averaged weights
    from batlit.checkpoint.hot_start import load_hot_start

    method = FRL(copy.deepcopy(reference), attack=ATTACK, optimizer=OPT, init_ckpt=str(path))
    load_hot_start(method, str(path))  # what batlit.train does with method.init_ckpt
    for (name, ours), (_, theirs) in zip(method.model.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(ours, theirs, msg=name)
    some = next(k for k, v in state.items() if k.startswith("model.") and v.is_floating_point())
    assert not torch.equal(state[some], state["averaged_" + some])


# ---- BAT's statistic and FAT's epoch -----------------------------------------------------------------

def test_bat_records_the_boundary_steps_of_its_attack():
    from batlit.attacks import boundary_pgd

    method = BAT(_model(), attack=ATTACK, optimizer=OPT)
    x, y = torch.rand(8, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    _, steps = _same_seed(lambda: method.perturb(x, y), lambda: boundary_pgd(
        method.model, x, y, eps=8 / 255, step_size=2 / 255, steps=3, tau=1, init_std=0.001, loss="kl").steps)
    stats = method.steps_to_boundary.compute()
    assert float(stats["mean"]) == pytest.approx(float(steps.float().mean()))
    assert float(stats["never"]) == pytest.approx(float((steps == 3).float().mean()))


def test_fat_tau_follows_the_one_based_epoch(trainer):
    method = FAT(_model(), attack=ATTACK, optimizer=OPT)   # tau 0 from epoch 1, 1 from 51, 2 from 91
    taus = []
    for epoch in (49, 50, 89, 90):  # 0-based: the 50th, 51st, 90th and 91st epochs
        trainer(current_epoch=epoch)
        taus.append(method.tau)
    assert taus == [0, 1, 1, 2]
