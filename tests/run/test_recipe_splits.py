"""The paper recipes train on every training image, as their authors' code does; an Optuna search
over one sets its own validation split."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from conftest import ROOT
from conftest import compose_config as _compose

BAT_RECIPES = ["bat_cifar10", "bat_cifar100", *(f"bat_ablation_row{i}" for i in range(1, 7))]


@pytest.mark.parametrize("experiment", BAT_RECIPES)
def test_bat_recipes_train_on_all_training_images(experiment):
    assert _compose(f"experiment={experiment}").data.val_size == 0


def _readme_optuna_overrides() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "hparams_search=bat_optuna" in ln and ln.startswith("python"))
    return [a for a in re.sub(r"#.*", "", line).split()[3:] if a != "-m"]


def test_the_readmes_optuna_search_holds_out_its_own_validation_split():
    from batlit.train import check_objective

    overrides = _readme_optuna_overrides()
    assert "experiment=bat_cifar10" in overrides
    cfg = _compose(*overrides)
    assert cfg.data.val_size == 1000 and cfg.objective.split == "val"
    check_objective(cfg)  # the sweep's first job would start


def test_an_optuna_search_over_a_recipe_without_a_split_stops_before_training():
    from batlit.config import ConfigError
    from batlit.train import check_objective

    cfg = _compose("hparams_search=bat_optuna", "experiment=bat_cifar10")
    assert OmegaConf.select(cfg, "data.val_size") == 0
    with pytest.raises(ConfigError, match="needs a validation split"):
        check_objective(cfg)
