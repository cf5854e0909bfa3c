"""The registry of methods (batlit.methods.registry): which classes it holds, the hyperparameter
rules each declares (check_hparams, the config validation's method part) and the sync-check cases;
and the objectives every method composes (batlit.methods.objectives)."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import batlit.methods as methods
from batlit.config import ConfigError
from batlit.methods import METHODS, AdversarialMethod, ClassWiseMethod, check_hparams
from batlit.methods.objectives import BASES, LossWeights, PGDATObjective, TRADESObjective
from batlit.methods.registry import hparam_rules, sync_check_cases
from batlit.models import small_cnn
from conftest import ROOT

CONF = ROOT / "conf" / "method"
ATTACK = {"eps": 8 / 255, "train": {"steps": 2, "step_size": 2 / 255}, "val": {"steps": 2, "step_size": 2 / 255},
          "test": {"steps": 2, "step_size": 2 / 255}}
OPT = {"name": "sgd", "lr": 0.01}


def _method_cfg(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=True, throw_on_missing=False)


# ---- what the registry holds ------------------------------------------------------------------------

def test_every_method_config_names_a_registered_class_exported_under_its_target():
    targets = {_method_cfg(p.stem)["_target_"] for p in CONF.glob("*.yaml")}
    assert targets == set(METHODS)  # no config without its class, no class without a config
    for target, cls in METHODS.items():
        assert getattr(methods, target.rsplit(".", 1)[1]) is cls


def test_bases_and_classes_outside_batlit_do_not_register():
    assert AdversarialMethod not in METHODS.values() and ClassWiseMethod not in METHODS.values()

    class Mine(ClassWiseMethod):  # a user's (or a test's) subclass: not batlit's method
        pass

    assert Mine not in METHODS.values()
    before = dict(METHODS)
    try:  # one defined in batlit.methods joins under its public path
        new = types.new_class("NewRule", (ClassWiseMethod,), exec_body=lambda ns: ns.update(
            __module__="batlit.methods.new_rule"))
        assert METHODS["batlit.methods.NewRule"] is new
        abstract = types.new_class("Half", (ClassWiseMethod,), {"abstract": True}, lambda ns: ns.update(
            __module__="batlit.methods.half"))
        assert abstract not in METHODS.values()
    finally:
        METHODS.clear()
        METHODS.update(before)


# ---- the hyperparameter rules ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_shipped_method_configs_pass_their_rules(name):
    cfg = {k: ("run.ckpt" if v == "???" else v) for k, v in _method_cfg(name).items()}
    check_hparams(cfg["_target_"], cfg, epochs=200)


@pytest.mark.parametrize("target,cfg,epochs,message", [
    ("batlit.methods.TRADES", {"beta": -1}, 5, "method.beta must be >= 0, got -1"),
    ("batlit.methods.FATTRADES", {"beta": -0.5}, 5, "method.beta must be >= 0, got -0.5"),  # TRADES' rule
    ("batlit.methods.BAT", {"alpha": -0.5}, 5, "method.alpha must be >= 0, got -0.5"),
    ("batlit.methods.BAT", {"tau": -1}, 5, "method.tau must be an integer >= 0, got -1"),
    ("batlit.methods.BAT", {"tau": 1.5}, 5, "method.tau must be an integer >= 0, got 1.5"),
    ("batlit.methods.BAT", {"beta": True}, 5, "method.beta must be >= 0, got True"),
    ("batlit.methods.FRL", {"bound": -0.01}, 5, "method.bound must be >= 0, got -0.01"),
    ("batlit.methods.FRL", {"rate2": -1}, 5, "method.rate2 must be >= 0, got -1"),
    ("batlit.methods.FRL", {"init_ckpt": "???"}, 5, "method.init_ckpt is required: the checkpoint to fine-tune"),
    ("batlit.methods.FAAL", {"init_ckpt": "???"}, 5, "method.init_ckpt is required"),
    ("batlit.methods.FAAL", {"r": -1}, 5, "method.r must be >= 0, got -1"),
    ("batlit.methods.WAT", {"eta": -0.1}, 5, "method.eta must be >= 0, got -0.1"),
    ("batlit.methods.CFA", {"lambda2": -1}, 5, "method.lambda2 must be >= 0, got -1"),
    ("batlit.methods.CFA", {"threshold": 1.2}, 5, "method.threshold must be in [0, 1] (or null for the base's default)"),
    ("batlit.methods.CFA", {"threshold": -0.1}, 5, "method.threshold must be in [0, 1]"),
    ("batlit.methods.DAFA", {"lam": -1}, 5, "method.lam must be >= 0, got -1"),
    ("batlit.methods.DAFA", {"warmup_epoch": 70}, 5,
     "method.warmup_epoch=70 is beyond the run's epochs=5: the class weights would never be computed "
     "(set method.warmup_epoch <= epochs)"),
    ("batlit.methods.CFA", {"begin": 0}, 5, "method.begin must be an integer >= 1, got 0"),
    ("batlit.methods.CFA", {"decay": 1.5}, 5, "method.decay must be in [0, 1], got 1.5"),
    ("batlit.methods.FRL", {"lim": -0.5}, 5, "method.lim must be >= 0, got -0.5"),
    ("batlit.methods.DAFA", {"warmup_epoch": 0}, 5, "method.warmup_epoch must be an integer >= 1, got 0"),
    ("batlit.methods.DAFA", {"warmup_epoch": 2.5}, 5, "method.warmup_epoch must be an integer >= 1, got 2.5"),
    ("batlit.methods.WAT", {"init_std": -0.001}, 5, "method.init_std must be >= 0, got -0.001"),
    ("batlit.methods.GAIRAT", {"lam_schedule": "cosine"}, 5,
     "method.lam_schedule must be one of fixed, piecewise, linear, got 'cosine'"),
    ("batlit.methods.GAIRAT", {"begin_epoch": 0}, 5, "method.begin_epoch must be an integer >= 1, got 0"),
    ("batlit.methods.BAT", {"uniform_kl": "sideways"}, 5,
     "method.uniform_kl must be one of model_to_uniform, uniform_to_model, got 'sideways'"),
    ("batlit.methods.BAT", {"target": ["last_clean", "x"]}, 5, "method.target must be among last_clean, first_adv"),
    ("my.own.Method", {"beta": -1}, 5, "method.beta must be >= 0, got -1"),  # a class outside batlit: shared rules
])
def test_a_value_its_method_refuses_is_one_line_naming_the_key(target, cfg, epochs, message):
    with pytest.raises(ConfigError) as caught:
        check_hparams(target, cfg, epochs)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("target,cfg,epochs", [
    ("batlit.methods.GAIRAT", {"lam": -1.0}, 5),          # GAIRAT's λ may be negative (DAFA's may not)
    ("my.own.Method", {"lam": -1.0}, 5),                  # no rule all methods with a λ agree on
    ("batlit.methods.CFA", {"threshold": None}, 5),       # null: the base's default
    ("batlit.methods.CFA", {"threshold": 1}, 5),
    ("batlit.methods.DAFA", {"warmup_epoch": 5}, 5),      # the last epoch still computes the weights
    ("batlit.methods.FAAL", {"init_ckpt": None}, 5),      # null is batlit.train's to refuse, with its own line
    ("batlit.methods.TRADES", {"beta": 0}, 5),
])
def test_values_the_rules_allow(target, cfg, epochs):
    check_hparams(target, cfg, epochs)


@pytest.mark.parametrize("target,kwargs,message", [
    ("batlit.methods.CFA", {"decay": 1.5}, "method.decay must be in [0, 1], got 1.5"),
    ("batlit.methods.CFA", {"begin": 0}, "method.begin must be an integer >= 1, got 0"),
    ("batlit.methods.DAFA", {"warmup_epoch": 0}, "method.warmup_epoch must be an integer >= 1, got 0"),
    ("batlit.methods.FRL", {"lim": -1.0}, "method.lim must be >= 0, got -1.0"),
    ("batlit.methods.FAAL", {"r": -1.0}, "method.r must be >= 0, got -1.0"),
    ("batlit.methods.WAT", {"beta": -1.0}, "method.beta must be >= 0, got -1.0"),
    ("batlit.methods.GAIRAT", {"weight_function": "relu"},
     "method.weight_function must be one of tanh, sigmoid, discrete, got 'relu'"),
])
def test_the_constructor_checks_its_arguments_by_the_same_declared_rules(target, kwargs, message):
    # AdversarialMethod.__init__ runs check_hparams on the whole subclass chain's arguments: a
    # method built in Python, without the config validation, is refused by the same one line
    model = small_cnn(num_classes=10, in_channels=3, width=4)
    with pytest.raises(ConfigError) as caught:
        METHODS[target](model, attack=ATTACK, optimizer=OPT, **kwargs)
    assert str(caught.value) == message


def test_a_subclass_inherits_its_bases_rules_and_adds_its_own():
    rules = hparam_rules(METHODS["batlit.methods.DAFA"])
    assert rules["beta"] is hparam_rules(ClassWiseMethod)["beta"]
    assert {"lam", "warmup_epoch"} <= set(rules) and "lam" not in hparam_rules(ClassWiseMethod)


# ---- the sync-check cases ------------------------------------------------------------------------

def test_sync_check_cases_are_declared_by_their_classes_and_build():
    cases = sync_check_cases()
    assert list(cases) == ["pgd_at", "trades", "bat", "bat_nosync", "gairat", "frl", "cfa", "wat", "dafa", "faal"]
    assert cases["bat_nosync"] == (METHODS["batlit.methods.BAT"], {"compact": False, "early_exit": False})
    assert cases["dafa"][1] == {"warmup_epoch": 1}
    for cls, kwargs in cases.values():
        cls(small_cnn(num_classes=10, in_channels=3, width=4), attack=ATTACK, optimizer=OPT, **kwargs)


# ---- the objectives ----------------------------------------------------------------------------------

def _terms():
    torch.manual_seed(0)
    logits, logits_adv, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="none").sum(1)
    return {"ce": F.cross_entropy(logits, y, reduction="none"), "kl": kl, "logits_adv": logits_adv}


def test_trades_weighted_loss_by_hand():
    terms, trades = _terms(), TRADESObjective(beta=6.0)
    w_ce, w_kl = torch.rand(6), torch.rand(6)
    out = trades.weighted_loss(terms)
    torch.testing.assert_close(out["loss"], terms["ce"].mean() + 6.0 * terms["kl"].mean())
    out = trades.weighted_loss(terms, LossWeights(ce=w_ce, kl=w_kl))
    torch.testing.assert_close(out["natural"], (w_ce * terms["ce"]).sum() / 6)
    torch.testing.assert_close(out["robust_kl"], (w_kl * terms["kl"]).sum() / 6)
    out = trades.weighted_loss(terms, LossWeights(ce=w_ce, kl=w_kl, normalise=True))
    torch.testing.assert_close(out["loss"], (w_ce * terms["ce"]).sum() / w_ce.sum()
                               + 6.0 * (w_kl * terms["kl"]).sum() / w_kl.sum())
    out = trades.weighted_loss(terms, LossWeights(sample=w_ce, scale=4))
    per_sample = terms["ce"] + 6.0 * terms["kl"]
    torch.testing.assert_close(out["loss"], 4 * (w_ce * per_sample).sum() / 6)
    torch.testing.assert_close(out["base_loss"], per_sample.mean())


def test_pgd_at_weights_its_cross_entropy_and_has_no_kl_term():
    terms, at = _terms(), PGDATObjective()
    w = torch.rand(6)
    torch.testing.assert_close(at.weighted_loss(terms, LossWeights(ce=w))["loss"], (w * terms["ce"]).mean())
    with pytest.raises(ValueError, match="no KL term"):
        at.weighted_loss(terms, LossWeights(kl=w))


def test_method_base_names_one_objective_each():
    assert BASES == {"pgd_at": PGDATObjective, "trades": TRADESObjective}
    trades = BASES["trades"].from_options(beta=1.5, init_std=0.002, reuse_clean_logits=True, adv_first=True)
    assert (trades.beta, trades.init_std, trades.reuse_clean, trades.adv_first, trades.fused) == (
        1.5, 0.002, True, True, False)
    assert BASES["pgd_at"].from_options(beta=1.5, init_std=0.002) == PGDATObjective()


def test_the_epoch_counts_from_one(monkeypatch):
    method = METHODS["batlit.methods.PGDAT"](small_cnn(num_classes=10, in_channels=3, width=4), attack=ATTACK,
                                             optimizer=OPT)
    monkeypatch.setattr(type(method), "current_epoch", property(lambda self: 0))
    assert method.epoch == 1
