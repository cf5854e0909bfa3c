"""Five places where batlit once differed from the authors' code, each checked against a direct port of it.

1. lr decays start at the milestone epoch (1-based) for the TRADES, BAT, FAT and GAIRAT recipes
   and one epoch later for FRL's (torch's MultiStepLR stepped after each epoch);
2. TRADES and FRL make three train-mode forwards (clean, adversarial, clean), so BatchNorm's running
   statistics are the authors'; FAT for TRADES makes two;
3. the paper experiments of PGD-AT, TRADES, FAT and GAIRAT train on all 50,000 images (run/test_configs.py);
4. FRL-Remargin still reweights the clean term;
5. FRL refuses a hot start that trained on its validation images.
"""

from __future__ import annotations

import copy
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch import nn

from batlit.checkpoint.hot_start import HotStart, check_init_split
from batlit.config import ConfigError, register_resolvers
from batlit.data.splits import split_indices
from batlit.data.synthetic import SyntheticDataModule
from batlit.methods import FATTRADES, FRL, TRADES, Standard
from batlit.methods.base import StepDecay
from batlit.methods.frl import class_weights
from conftest import with_hydra_runtime
from conftest import compose_config as _compose
from conftest import linear_model as _linear

register_resolvers()
ATTACK = {"eps": 8 / 255, "train": {"steps": 3, "step_size": 2 / 255},
          "val": {"steps": 2, "step_size": 2 / 255}, "test": {"steps": 2, "step_size": 2 / 255}}
OPT = {"name": "sgd", "lr": 0.1, "momentum": 0.9}


# ---- 1. learning-rate schedules ----------------------------------------------------------------

class _LrPerEpoch(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("count_from,expected", [
    (1, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]),   # the authors' `if epoch >= m`
    (0, [0.1, 0.1, 0.1, 0.01, 0.01, 0.001]),     # MultiStepLR.step(epoch) after each epoch (FRL)
])
def test_a_lightning_fit_decays_the_lr_from_the_milestone_epoch(count_from, expected):
    """A real 6-epoch fit with milestones [3, 5]: Lightning steps the schedule after each epoch."""
    method = Standard(_linear(), attack=ATTACK, optimizer=OPT,
                      scheduler={"name": "multistep", "milestones": [3, 5], "count_from": count_from})
    data = torch.utils.data.TensorDataset(torch.rand(8, 3, 4, 4), torch.randint(0, 4, (8,)))
    record = _LrPerEpoch()
    trainer = L.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[record])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few workers, small logging interval
        trainer.fit(method, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=8))
    assert record.lrs == pytest.approx(expected)


# The authors' rules, ported: the lr of each 1-based epoch.
def _bat_trades(epoch: int, lr: float = 0.1) -> float:
    """train.py (BAT) and train_trades_cifar10.py: adjust_learning_rate(optimizer, epoch), epochs from 1."""
    if epoch >= 100:
        return lr * 0.001
    if epoch >= 90:
        return lr * 0.01
    if epoch >= 75:
        return lr * 0.1
    return lr


def _gairat(t: int, epochs: int = 120, lr_max: float = 0.1) -> float:
    """GAIRAT.py's `piecewise` lr_schedule(epoch + 1) for epochs >= 110."""
    if t / epochs < 0.5:
        return lr_max
    if t / epochs < 0.75:
        return lr_max / 10.0
    if t / epochs < 11 / 12:
        return lr_max / 100.0
    return lr_max / 200.0


def _fat(epoch: int, lr: float = 0.1) -> float:
    """FAT.py: adjust_learning_rate(optimizer, epoch + 1)."""
    if epoch >= 110:
        return lr * 0.005
    if epoch >= 90:
        return lr * 0.01
    if epoch >= 60:
        return lr * 0.1
    return lr


def _frl_lrs(epochs: int) -> list[float]:
    """frlrm.py / frlrw.py: MultiStepLR(milestones=[40, 80, 250], gamma=0.1) on lr 0.001, stepped
    with lr_scheduler.step(now_epoch) after each 1-based epoch now_epoch."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(()))], lr=0.001)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[40, 80, 250], gamma=0.1)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # step(epoch) is deprecated; the authors call it so
        for now_epoch in range(1, epochs + 1):
            lrs.append(opt.param_groups[0]["lr"])
            sched.step(now_epoch)
    return lrs


@pytest.mark.parametrize("experiment,authors", [
    ("bat_cifar10", lambda n: [_bat_trades(e) for e in range(1, n + 1)]),       # gamma powers, count_from 1
    ("trades6_cifar10", lambda n: [_bat_trades(e) for e in range(1, n + 1)]),
    ("pgd_at_cifar10", lambda n: [_bat_trades(e) for e in range(1, n + 1)]),    # the BAT code's schedule
    ("fat_cifar10", lambda n: [_fat(e) for e in range(1, n + 1)]),              # factors
    ("gairat_cifar10", lambda n: [_gairat(e) for e in range(1, n + 1)]),
    ("frl_rwrm_cifar10_tau005", _frl_lrs),                                       # count_from 0
])
def test_each_experiments_lr_per_epoch_is_its_sources(experiment, authors):
    """The lr of every 1-based epoch of the paper config, from the scheduler stepped as Lightning
    steps it (once after each epoch), against the authors' script."""
    cfg = _compose(f"experiment={experiment}")
    method = Standard(_linear(), attack=ATTACK, optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
                      scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True))
    setup = method.configure_optimizers()
    optimizer, schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    ours = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": no training here
        for _ in range(cfg.epochs):
            ours.append(optimizer.param_groups[0]["lr"])
            schedule.step()
    assert ours == pytest.approx(authors(cfg.epochs), rel=1e-9)


def test_step_decay_refuses_another_count():
    with pytest.raises(ValueError, match="scheduler.count_from"):
        StepDecay([3], count_from=2)
    assert [StepDecay([3], count_from=1)(e) for e in range(4)] == pytest.approx([1, 1, 0.1, 0.1])


# ---- 2. train-mode forwards and BatchNorm's running statistics ---------------------------------

def _bn_model(k: int = 4) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, k))
    model.num_classes = k
    return model


def _trades_loss_authors(model, x, x_adv, y, beta):
    """yaodongyu/TRADES trades_loss after the attack: model.train(), then its forwards in order."""
    model.train()
    criterion_kl = nn.KLDivLoss(reduction="sum")
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1)) / len(x)
    return loss_natural + beta * loss_robust


def _fat_trades_loss_authors(model, x, x_adv, y, beta):
    """FAT_for_TRADES.py: natural_logits = model(output_natural); adv_logits = model(output_adv); TRADES_loss."""
    model.train()
    natural_logits = model(x)
    adv_logits = model(x_adv)
    loss_robust = nn.KLDivLoss(reduction="sum")(F.log_softmax(adv_logits, dim=1), F.softmax(natural_logits, dim=1))
    return F.cross_entropy(natural_logits, y) + beta * loss_robust / len(x)


def _frl_loss_authors_order(model, x, x_adv, y, beta, w_nat, w_bndy):
    """FRL's train_model forwards (utils_frl.py): criterion_nat(model(data)), then criterion_kl(
    log_softmax(model(x_adv)), softmax(model(data))); batlit's normalisation of the two sums."""
    model.train()
    natural = F.cross_entropy(model(x), y, reduction="none")
    bndy = nn.KLDivLoss(reduction="none")(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1)).sum(1)
    return (w_nat * natural).sum() / w_nat.sum() + beta * (w_bndy * bndy).sum() / w_bndy.sum()


def _one_step(method, x, y):
    """One training step of a method (attack in eval mode, objective in train mode, SGD step);
    returns the examples it trained on and its loss."""
    seen = {}
    perturb = method.perturb

    def keep(xx, yy):
        seen["examples"] = perturb(xx, yy)
        return seen["examples"]

    method.perturb = keep
    optimizer = torch.optim.SGD(method.model.parameters(), lr=0.1, momentum=0.9)
    method.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        loss = method.training_step((x, y), 0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return seen["examples"], loss.detach()


def _reference_step(model, loss_fn):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = loss_fn(model)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def _assert_same_state(ours: nn.Module, reference: nn.Module) -> None:
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 3, 4, 4, generator=g), torch.randint(0, 4, (16,), generator=g)


@pytest.mark.parametrize("cls", [TRADES, FATTRADES])
def test_trades_running_statistics_after_one_step_are_the_authors(cls):
    """BatchNorm's running mean and variance (and every weight) after one step equal a direct port of
    the authors' loss on the same examples: three forwards for TRADES, two for FAT for TRADES."""
    x, y = _batch()
    method = cls(_bn_model(), attack=ATTACK, optimizer=OPT, beta=6.0)
    reference = copy.deepcopy(method.model)
    x_adv, loss = _one_step(method, x, y)
    authors = _trades_loss_authors if cls is TRADES else _fat_trades_loss_authors
    ref_loss = _reference_step(reference, lambda m: authors(m, x, x_adv, y, 6.0))
    torch.testing.assert_close(loss, ref_loss)
    _assert_same_state(method.model, reference)
    forwards = 3 if cls is TRADES else 2
    assert int(method.model[1].num_batches_tracked) == forwards  # the attack ran in eval mode


def test_the_forward_options_change_the_statistics_not_the_loss():
    """reuse_clean_logits (two forwards) keeps TRADES' loss and moves BatchNorm less towards clean
    images; fused_forward normalises [x, x_adv] as one batch."""
    x, y = _batch()
    x_adv = (x + 0.3).clamp(0, 1)  # brighter: other batch statistics than x's
    out = {}
    for name, kwargs in (("three", {}), ("two", {"reuse_clean_logits": True}), ("fused", {"fused_forward": True})):
        method = TRADES(_bn_model(), attack=ATTACK, optimizer=OPT, **kwargs)
        method.train()
        out[name] = (method.objective(x, y, x_adv)["loss"], method.model[1].running_mean.clone(),
                     int(method.model[1].num_batches_tracked))
    torch.testing.assert_close(out["two"][0], out["three"][0])
    assert not torch.allclose(out["two"][1], out["three"][1])
    assert [out[k][2] for k in ("three", "two", "fused")] == [3, 2, 1]
    fused_ref = _bn_model().train()
    fused_ref(torch.cat([x, x_adv]))
    torch.testing.assert_close(out["fused"][1], fused_ref[1].running_mean)


def test_frl_running_statistics_after_one_step_follow_train_model():
    x, y = _batch()
    method = FRL(_bn_model(), attack=ATTACK, optimizer=OPT, beta=1.5)
    method.lambda_nat.copy_(torch.tensor([0.2, 0.0, 0.1, 0.0]))
    method.lambda_bndy.copy_(torch.tensor([0.0, 0.3, 0.0, 0.0]))
    method.lambda_eps.copy_(torch.tensor([0.1, 0.0, -0.2, 0.0]))
    w_nat, w_bndy = class_weights(method.lambda_nat)[y], class_weights(method.lambda_bndy)[y]
    reference = copy.deepcopy(method.model)
    x_adv, loss = _one_step(method, x, y)
    ref_loss = _reference_step(reference, lambda m: _frl_loss_authors_order(m, x, x_adv, y, 1.5, w_nat, w_bndy))
    torch.testing.assert_close(loss, ref_loss)
    _assert_same_state(method.model, reference)
    assert int(method.model[1].num_batches_tracked) == 3


# ---- 4. FRL-Remargin reweights the clean term ----------------------------------------------------

def test_frl_remargin_reweights_the_clean_term_and_leaves_the_boundary_uniform():
    """frlrm.py with utils_frl1.py: λ_nat += r1·γ_nat (normalised) weights CE; λ_bndy's update is
    commented out, so the boundary weights stay 1/K; λ_eps moves the margins."""
    cfg = _compose("method=frl_rm")
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.method).items() if k not in ("_target_", "init_ckpt")}
    method = FRL(_linear(), attack=ATTACK, optimizer=OPT, **kwargs)
    assert method.reweight == ("natural",) and method.remargin
    std, bndy = torch.tensor([0.40, 0.10, 0.20, 0.10]), torch.tensor([0.50, 0.20, 0.30, 0.20])
    method.update_multipliers(std, bndy, std_total=0.2, bndy_total=0.3, epoch=1)
    torch.testing.assert_close(method.lambda_nat, torch.tensor([0.0075, 0.0, 0.0, 0.0]))
    assert torch.count_nonzero(method.lambda_bndy) == 0
    torch.testing.assert_close(method.lambda_eps, 0.2 * torch.tensor([0.15, -0.15, -0.05, -0.15]))
    x, y = torch.rand(8, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    w_nat, w_bndy = method.sample_weights(y)
    torch.testing.assert_close(w_nat, class_weights(method.lambda_nat)[y])
    torch.testing.assert_close(w_bndy, torch.full((8,), 0.25))
    out = method.objective(x, y, method.perturb(x, y))
    ce = F.cross_entropy(method.model(x), y, reduction="none")
    torch.testing.assert_close(out["natural"], (w_nat * ce).sum() / w_nat.sum())
    assert not torch.allclose(out["natural"], ce.mean())  # the clean term really is weighted


def test_frl_reweight_option_values():
    both = FRL(_linear(), attack=ATTACK, optimizer=OPT, reweight=True)
    none = FRL(_linear(), attack=ATTACK, optimizer=OPT, reweight=False)
    assert both.reweight == ("natural", "boundary") and none.reweight == ()
    none.update_multipliers(torch.full((4,), 0.5), torch.full((4,), 0.5), 0.1, 0.1, epoch=1)
    assert torch.count_nonzero(none.lambda_nat) == torch.count_nonzero(none.lambda_bndy) == 0
    with pytest.raises(ValueError, match="method.reweight"):
        FRL(_linear(), attack=ATTACK, optimizer=OPT, reweight=["margins"])


# ---- 5. FRL's validation split and the hot start's training data -------------------------------

@pytest.mark.parametrize("val_size,train_subset", [(30, None), (0.1, 100), (0, 50)])
def test_split_indices_are_the_datamodules(val_size, train_subset):
    """split_indices recomputes ImageDataModule.setup's split: the same images, in the same order."""
    dm = SyntheticDataModule(image_size=4, n_train=300, n_test=10, val_size=val_size, train_subset=train_subset, seed=3)
    dm.setup()
    full = dm._load()
    val_idx, train_idx = split_indices(full.train_y, val_size, 3, train_subset)
    assert torch.equal(full.train_x[train_idx], dm.train_x)
    if dm.val_x is None:
        assert val_idx.numel() == 0
    else:
        assert torch.equal(full.train_x[val_idx], dm.val_x)


def _run_data(val_size, seed=0):
    return {"_target_": "batlit.data.SyntheticDataModule", "val_size": val_size, "seed": seed}


def _hot(**data):
    return HotStart("hot.ckpt", {"_target_": "batlit.data.SyntheticDataModule", "val_size": 20, "seed": 0, **data})


def test_a_hot_start_that_trained_on_the_validation_images_is_one_line(capsys):
    dm = SyntheticDataModule(image_size=4, n_train=300, n_test=10, val_size=60, seed=0)
    dm.setup()
    run = _run_data(60)
    # the refused case: a smaller held-out split with the same seed
    with pytest.raises(ConfigError, match="40 of this run's 60 validation images") as err:
        check_init_split(_hot(val_size=20), run, dm, allow_val_overlap=False)
    assert "\n" not in str(err.value) and "method.allow_val_overlap" in str(err.value)
    for hot in ({"val_size": 0}, {"val_size": 60, "seed": 1}):  # all images trained on; another seed
        with pytest.raises(ConfigError, match="of this run's 60 validation images"):
            check_init_split(_hot(**hot), run, dm, allow_val_overlap=False)
    for hot in ({"val_size": 60}, {"val_size": 120}, {"val_size": 60, "train_subset": 100}):
        # the same split (with or without a training subset), or a larger one
        check_init_split(_hot(**hot), run, dm, allow_val_overlap=False)
    check_init_split(_hot(val_size=20), run, dm, allow_val_overlap=True)
    assert capsys.readouterr().err.count("batlit: warning: method.init_ckpt: 40 of this run's 60") == 1
    check_init_split(_hot(_target_="batlit.data.CIFAR10DataModule"), run, dm, allow_val_overlap=True)
    assert "not checked" in capsys.readouterr().err


def test_train_refuses_fine_tuning_a_hot_start_on_its_training_images(tmp_path, hot_start):
    """End to end in-process: the hot start (data.val_size=40) stored its data settings; FRL with
    data.val_size=60 stops in one line before training, FRL with the same split trains."""
    from batlit import train

    ckpt = hot_start / "checkpoints" / "last.ckpt"
    common = ["data=synthetic", "model=small_cnn", "trainer=cpu", "epochs=1", "attack.train.steps=2",
              "attack.val.steps=2", "attack.test.steps=2", "trainer.enable_progress_bar=false",
              "method=frl_rwrm", f"method.init_ckpt={ckpt}", "test=false",
              "++estimate_cost=false"]  # no timed probe step: the refusal is what this test measures
    with initialize_config_module(config_module="batlit.conf", version_base="1.3"):
        cfg = with_hydra_runtime(compose("train", overrides=[*common, "data.val_size=60"], return_hydra_config=True),
                                 tmp_path)
    with pytest.raises(ConfigError, match=r"method.init_ckpt: \d+ of this run's 60 validation images") as err:
        train.run(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # stopped before the first epoch
