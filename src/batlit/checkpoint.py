"""Re-create a trained model (and its data) from a batlit checkpoint alone.

Every checkpoint carries the composed run config (``hyper_parameters.run_config``) and a ``batlit``
record (version, class names), so ``evaluate`` / ``analyze`` need only ``ckpt=PATH``.
Checkpoints are read with ``torch.load(..., weights_only=True)``: tensors and plain data only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError


@dataclass
class LoadedRun:
    model: torch.nn.Module
    config: DictConfig
    class_names: list[str]
    run_dir: Path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt: no checkpoint file at '{path}'")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, in one line
        raise ConfigError(f"ckpt: '{path}' is not a readable checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200]})") from err


def load_run(path: str | Path) -> LoadedRun:
    """The trained model in eval mode, the config it was trained with and its class names."""
    ckpt = read_checkpoint(path)
    hparams = ckpt.get("hyper_parameters", {})
    if "run_config" not in hparams or "batlit" not in ckpt:
        raise ConfigError(f"ckpt: '{path}' was not written by batlit.train (no config inside)")
    config = OmegaConf.create(hparams["run_config"])
    model = hydra.utils.instantiate(config.model)
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"ckpt: '{path}' does not fit model {config.model._target_} "
                          f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    model.eval()
    path = Path(path).resolve()
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return LoadedRun(model, config, list(ckpt["batlit"]["class_names"]), run_dir)


def datamodule_for(config: DictConfig, **overrides: Any):
    """The run's DataModule (test split), with data.* overrides such as eval batch size."""
    node = OmegaConf.merge(config.data, overrides)
    datamodule = hydra.utils.instantiate(node)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule
