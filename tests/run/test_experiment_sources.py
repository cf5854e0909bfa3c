"""Each paper experiment's settings (conf/experiment/) against the source its own config comment
cites: data, model, method options, training attack, optimiser, lr schedule, epochs, validation split."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import compose_config as _compose

EPS = 8 / 255
STEP = 2 / 255
# Each experiment's settings as the sources cited in its own config comment state them
# (conf/experiment/<name>.yaml; docs/methods.md, docs/design.md §3 and §6). The class-wise ones
# (cfa, wat, dafa, faal) are checked against their authors' scripts in tests/fidelity/test_classwise_authors.py.
#   attack.train: (eps, steps, step); optimizer: (lr, momentum, wd, nesterov);
#   scheduler: (milestones, gamma, factors, count_from); val: data.val_size
LINF_TRADES = (0.031, 10, 0.007)   # TRADES / BAT / FAT code: 10 steps of 0.007 within 0.031
LINF = (EPS, 10, STEP)             # PGD-10, 8/255, step 2/255
SGD = (0.1, 0.9, 2e-4, False)      # BAT / TRADES code: lr 0.1, momentum 0.9, wd 2e-4
BAT_DECAY = ([75, 90, 100], 0.1, None, 1)   # ×0.1 from 1-based epochs 75, 90, 100
BAT_METHOD = {"_target_": "batlit.methods.BAT", "alpha": 1.0, "beta": 6.0, "tau": 1, "init_std": 0.001,
              "attack_loss": "kl", "uniform_kl": "model_to_uniform", "fused_forward": False, "source": "boundary",
              "target": ["last_clean", "first_adv"]}
FRL_METHOD = {"_target_": "batlit.methods.FRL", "reweight": ["natural", "boundary"], "remargin": True, "beta": 1.5,
              "rate1": 0.05, "rate2": 0.2, "halve_every": 40, "lim": 0.5, "margin_max": 3.0, "init_std": 0.001,
              "reuse_clean_logits": False, "fused_forward": False}
EXPERIMENTS = {
    "pgd_at_cifar10": ("CIFAR10", "resnet18", {"_target_": "batlit.methods.PGDAT"}, LINF, SGD, 110, BAT_DECAY, 0),
    "pgd_at_hot_start_cifar10": ("CIFAR10", "resnet18", {"_target_": "batlit.methods.PGDAT"}, LINF, SGD, 110,
                                 BAT_DECAY, 3000),
    "trades1_cifar10": ("CIFAR10", "resnet18", {"_target_": "batlit.methods.TRADES", "beta": 1.0, "init_std": 0.001,
                                                "reuse_clean_logits": False, "fused_forward": False},
                        LINF_TRADES, SGD, 110, BAT_DECAY, 0),
    "trades6_cifar10": ("CIFAR10", "resnet18", {"_target_": "batlit.methods.TRADES", "beta": 6.0, "init_std": 0.001,
                                                "reuse_clean_logits": False, "fused_forward": False},
                        LINF_TRADES, SGD, 110, BAT_DECAY, 0),
    # data.val_size 0: all 50,000 images, as the BAT code trains (an Optuna search sets its own split)
    "bat_cifar10": ("CIFAR10", "resnet18", BAT_METHOD, LINF_TRADES, SGD, 110, BAT_DECAY, 0),
    "bat_cifar100": ("CIFAR100", "resnet18", BAT_METHOD, LINF_TRADES, SGD, 110, BAT_DECAY, 0),
    **{f"bat_ablation_row{row}": ("CIFAR10", "resnet18", {**BAT_METHOD, "source": source, "target": target},
                                  LINF_TRADES, SGD, 110, BAT_DECAY, 0)
       for row, source, target in ((1, "boundary", []), (2, "boundary", ["last_clean"]), (3, "boundary", ["first_adv"]),
                                   (4, "boundary", ["x_adv"]), (5, "boundary", ["last_clean", "first_adv"]),
                                   (6, "fixed", ["last_clean", "first_adv"]))},
    "fat_cifar10": ("CIFAR10", "resnet18", {"_target_": "batlit.methods.FAT", "tau_schedule": [[1, 0], [51, 1], [91, 2]],
                                            "omega": 0.001, "init_std": 0.001},
                    LINF_TRADES, SGD, 120, ([60, 90, 110], 0.1, [0.1, 0.01, 0.005], 1), 0),
    "fat_trades_cifar10": ("CIFAR10", "resnet18", {"_target_": "batlit.methods.FATTRADES", "beta": 6.0,
                                                   "tau_schedule": [[1, 0], [31, 1], [51, 2], [71, 3]], "omega": 0.0,
                                                   "init_std": 0.001, "reuse_clean_logits": True},
                           LINF_TRADES, SGD, 85, ([75], 0.1, None, 1), 0),
    "gairat_cifar10": ("CIFAR10", "resnet18", {"_target_": "batlit.methods.GAIRAT", "lam": -1.0, "lam_schedule": "fixed",
                                               "begin_epoch": 60, "weight_function": "tanh"},
                       LINF_TRADES, SGD, 120, ([60, 90, 110], 0.1, [0.1, 0.01, 0.005], 1), 0),
    "frl_rwrm_cifar10_tau005": ("CIFAR10", "resnet18", {**FRL_METHOD, "bound": 0.05}, LINF, (0.001, 0.9, 5e-4, False),
                                120, ([40, 80], 0.1, None, 0), 3000),
    "frl_rwrm_cifar10_tau007": ("CIFAR10", "resnet18", {**FRL_METHOD, "bound": 0.07}, LINF, (0.001, 0.9, 5e-4, False),
                                120, ([40, 80], 0.1, None, 0), 3000),
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_paper_experiment_settings_are_their_sources(experiment):
    data, model, method, train_attack, sgd, epochs, decay, val_size = EXPERIMENTS[experiment]
    cfg = OmegaConf.to_container(_compose(f"experiment={experiment}"), resolve=True)
    assert cfg["data"]["_target_"] == f"batlit.data.{data}DataModule" and cfg["model"]["_target_"] == f"batlit.models.{model}"
    assert {k: cfg["method"][k] for k in method} == method
    attack = cfg["attack"]
    train_eps = attack["eps"] if attack["train"]["eps"] is None else attack["train"]["eps"]
    assert (train_eps, attack["train"]["steps"], attack["train"]["step_size"]) == pytest.approx(train_attack)
    # every paper config is tested with PGD-20 on CE, 8/255 with step 2/255, from a uniform start
    assert (attack["eps"], attack["test"]["steps"], attack["test"]["step_size"]) == pytest.approx((EPS, 20, STEP))
    assert (attack["test"]["loss"], attack["test"]["init"]) == ("ce", "uniform")
    opt = cfg["optimizer"]
    assert opt["name"] == "sgd" and (opt["lr"], opt["momentum"], opt["weight_decay"], opt["nesterov"]) == pytest.approx(sgd)
    sched = cfg["scheduler"]
    assert sched["name"] == "multistep"
    assert (sched["milestones"], sched["gamma"], sched["factors"], sched["count_from"]) == decay
    assert cfg["epochs"] == cfg["trainer"]["max_epochs"] == epochs
    assert cfg["data"]["val_size"] == val_size and cfg["data"]["batch_size"] == 128
