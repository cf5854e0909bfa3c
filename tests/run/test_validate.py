"""config.validate's boundaries, in-process (gaps found by scripts/mutants.py, docs/testing.md)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from batlit.config import ConfigError, validate


def _check(**cfg):
    validate(OmegaConf.create(cfg), check_paths=False)


def test_momentum_must_be_below_one():
    _check(optimizer={"momentum": 0.0})
    _check(optimizer={"momentum": 0.99})
    with pytest.raises(ConfigError, match=r"optimizer.momentum must be in \[0, 1\), got 1"):
        _check(optimizer={"momentum": 1})


def test_dafa_warmup_may_be_the_last_epoch_but_not_beyond():
    _check(epochs=5, method={"_target_": "batlit.methods.DAFA", "warmup_epoch": 5})
    with pytest.raises(ConfigError, match="method.warmup_epoch=6 is beyond the run's epochs=5"):
        _check(epochs=5, method={"_target_": "batlit.methods.DAFA", "warmup_epoch": 6})


def test_model_and_data_class_counts_must_agree():
    _check(data={"num_classes": 10}, model={"num_classes": 10})
    with pytest.raises(ConfigError, match="model.num_classes=9 does not match data.num_classes=10"):
        _check(data={"num_classes": 10}, model={"num_classes": 9})
