"""What a stored run config may name: batlit's own model and data factories, chosen by name.

A checkpoint's run config comes from wherever the checkpoint came from. batlit never hands it to
``hydra.utils.instantiate``: the model and the data module are rebuilt by looking their
``_target_`` up in :data:`MODELS` and :data:`DATAMODULES` (dicts of Python objects written here,
not imported by name), with plain keyword values. Every other ``_target_`` a run config may hold
(method, trainer, logger) is only compared with the ones batlit's own ``conf/`` groups ship
(:func:`shipped_targets`); none of them is instantiated from a checkpoint. docs/reliability.md,
"Trust".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from .data import (CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, ImageFolderDataModule,
                   ImagenetteDataModule, SyntheticDataModule)
from .models import preact_resnet18, resnet18, small_cnn, wrn28_10, wrn34_10

#: conf/model's factories, by the ``_target_`` their config files name.
MODELS: dict[str, Callable[..., Any]] = {
    "batlit.models.resnet18": resnet18,
    "batlit.models.preact_resnet18": preact_resnet18,
    "batlit.models.small_cnn": small_cnn,
    "batlit.models.wrn28_10": wrn28_10,
    "batlit.models.wrn34_10": wrn34_10,
}

#: conf/data's LightningDataModules, by the ``_target_`` their config files name.
DATAMODULES: dict[str, type] = {
    "batlit.data.CIFAR10DataModule": CIFAR10DataModule,
    "batlit.data.CIFAR100DataModule": CIFAR100DataModule,
    "batlit.data.ImageFolderDataModule": ImageFolderDataModule,
    "batlit.data.ImagenetteDataModule": ImagenetteDataModule,
    "batlit.data.DigitsDataModule": DigitsDataModule,
    "batlit.data.SyntheticDataModule": SyntheticDataModule,
}

# The config groups whose files sit at their group's key in a run config (``model._target_``).
_GROUPS = ("model", "data", "method", "trainer", "logger")
CONF_DIR = Path(__file__).resolve().parent / "conf"


def _targets_in(node: Any, prefix: str, out: dict[str, set[str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "defaults":
                continue
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "_target_":
                out.setdefault(path, set()).add(str(value))
            else:
                _targets_in(value, path, out)


@lru_cache(maxsize=1)
def shipped_targets() -> dict[str, frozenset[str]]:
    """``{"model._target_": {...}, "logger.csv._target_": {...}, ...}``: every ``_target_`` that
    batlit's own config groups (and its experiment presets) put at each key of a run config."""
    import yaml

    found: dict[str, set[str]] = {}
    for group in _GROUPS:
        for file in sorted((CONF_DIR / group).glob("*.yaml")):
            _targets_in(yaml.safe_load(file.read_text()) or {}, group, found)
    for file in sorted((CONF_DIR / "experiment").glob("*.yaml")):  # @package _global_
        node = yaml.safe_load(file.read_text()) or {}
        _targets_in({k: v for k, v in node.items() if k != "hydra"}, "", found)
    return {path: frozenset(values) for path, values in found.items()}
