"""Every option of every config group composes and resolves; interpolations flow from data."""

from __future__ import annotations

from importlib.resources import files

import pytest
from omegaconf import OmegaConf, open_dict

from batlit.config import register_resolvers
from conftest import compose_config as _compose

register_resolvers()
CONF = files("batlit.conf")
GROUPS = ["method", "data", "model", "attack", "optimizer", "scheduler", "trainer", "logger", "experiment"]
OPTIONS = [(g, p.name[:-5]) for g in GROUPS for p in sorted(CONF.joinpath(g).iterdir(), key=lambda p: p.name)
           if p.name.endswith(".yaml")]



def test_all_groups_have_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_resolves(group, option):
    cfg = _compose(f"{group}={option}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["trainer"]["max_epochs"] == resolved["epochs"]
    if resolved["data"].get("num_classes") is not None:
        assert resolved["model"]["num_classes"] == resolved["data"]["num_classes"]
    assert resolved["model"]["in_channels"] == resolved["data"]["in_channels"]


def test_num_classes_is_typed_once():
    cfg = _compose("data=cifar100")
    assert cfg.model.num_classes == 100


def test_experiments_only_override_and_chain():
    cfg = _compose("experiment=bat_cifar100")
    assert cfg.data._target_.endswith("CIFAR100DataModule") and cfg.method._target_.endswith("BAT")
    assert cfg.model.num_classes == 100 and cfg.attack.train.step_size == 0.007
    # the authors' training attack (ε = 0.031), tested at the paper's 8/255 like every other method
    assert cfg.attack.train.eps == 0.031 and cfg.attack.eps == _compose("method=pgd_at").attack.eps == 8 / 255
    row6 = _compose("experiment=bat_ablation_row6")
    assert row6.method.source == "fixed" and list(row6.method.target) == ["last_clean", "first_adv"]
    quick = _compose("experiment=quickstart")
    assert quick.epochs == 15 and quick.trainer.max_epochs == 15 and quick.data._target_.endswith("DigitsDataModule")


def test_baseline_experiments():
    fat = _compose("experiment=fat_cifar10")
    assert fat.method._target_.endswith(".FAT") and list(fat.scheduler.factors) == [0.1, 0.01, 0.005]
    ft = _compose("experiment=fat_trades_cifar10")
    assert ft.method._target_.endswith("FATTRADES") and ft.epochs == 85 and ft.scheduler.factors is None
    g = _compose("experiment=gairat_cifar10")
    assert g.method._target_.endswith("GAIRAT") and g.method.begin_epoch == 60 and g.epochs == 120


@pytest.mark.parametrize("experiment", ["pgd_at_cifar10", "trades1_cifar10", "trades6_cifar10", "fat_cifar10",
                                        "fat_trades_cifar10", "gairat_cifar10"])
def test_reference_experiments_train_on_every_training_image(experiment):
    """The authors' PGD-AT, TRADES, FAT and GAIRAT scripts train on all 50,000 CIFAR-10
    images, so their paper configs hold out no validation split; the lr decays from the milestone."""
    cfg = _compose(f"experiment={experiment}")
    assert cfg.data.val_size == 0 and cfg.scheduler.count_from == 1


def test_frl_experiments_keep_a_validation_split_and_their_hot_start_holds_it_out():
    """FRL's multipliers need its 300-per-class validation split; the hot start is PGD-AT's paper
    config with that split held out, and FRL's lr decays after its milestones (MultiStepLR.step(epoch))."""
    hot = _compose("experiment=pgd_at_hot_start_cifar10")
    pgd_at = _compose("experiment=pgd_at_cifar10")
    for tau in ("005", "007"):
        frl = _compose(f"experiment=frl_rwrm_cifar10_tau{tau}")
        assert frl.data.val_size == hot.data.val_size == 3000 and frl.data.seed == hot.data.seed
        assert frl.scheduler.count_from == 0 and list(frl.scheduler.milestones) == [40, 80]
    with open_dict(hot):
        hot.data.val_size = 0
    assert hot == pgd_at  # PGD-AT's recipe otherwise
    assert _compose("experiment=study_cifar10_cpu").data.val_size == 1000  # picks FRL's tau on validation


METHODS = [name for group, name in OPTIONS if group == "method"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_passes_the_early_option_check(method):
    """batlit.train builds the method around a stand-in model before reading data (FRL's init_ckpt
    left out): every shipped method config must pass it as it is."""
    from batlit.train import check_method_options

    check_method_options(_compose(f"method={method}"))


@pytest.mark.parametrize("overrides,needle", [
    (["method=bat", "+method.alpah=2"], "alpah"),
    (["method=bat", "method.source=sideways"], "method.source"),
    (["method=bat", "method.attack_loss=mse"], "method.attack_loss"),
    (["method=gairat", "attack.train.steps=1"], "attack.train.steps"),
    (["method=fat", "method.omega=-1"], "method.omega"),
    (["method=frl_rwrm", "method.reweight=false", "method.remargin=false"], "FRL needs reweight"),
    (["method=frl_rm", "method.reweight=[margins]"], "method.reweight"),
])
def test_bad_method_options_are_one_config_error_without_data(overrides, needle):
    from batlit.config import ConfigError
    from batlit.train import check_method_options

    with pytest.raises(ConfigError, match=needle) as err:
        check_method_options(_compose(*overrides))
    # "method: <the constructor's words>", or a declared rule's own line that names its key "method.<key> ..."
    assert str(err.value).startswith(("method: ", "method.")) and "\n" not in str(err.value)
