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
from lightning.pytorch.plugins.io import TorchCheckpointIO
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


# What a checkpoint must share with the run that resumes it: the method, the architecture and its
# shape, the dataset and its classes. Schedules, epochs and attack settings may change on resume.
RESUME_KEYS = ("method._target_", "model._target_", "model.num_classes", "model.in_channels", "model.width",
               "model.depth", "model.widen_factor", "data._target_", "data.num_classes", "data.image_size")


def check_resumable(path: str | Path, cfg: DictConfig) -> None:
    """One line naming the first key where the checkpoint's run and this run differ."""
    ckpt = read_checkpoint(path)
    saved = (ckpt.get("hyper_parameters") or {}).get("run_config")
    if saved is None:
        raise ConfigError(f"ckpt_path: '{path}' was not written by batlit.train (no config inside)")
    saved = OmegaConf.create(saved)
    for key in RESUME_KEYS:
        old = OmegaConf.select(saved, key, default=None)
        new = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if old is not None and new is not None and old != new:
            raise ConfigError(f"ckpt_path: '{path}' was trained with {key}={old}, this run has {key}={new}")


def keep_csv_history(loggers: list[Any], ckpt_path: str | Path) -> None:
    """On resume, keep the CSV rows of the epochs the checkpoint holds.

    Lightning's CSVLogger deletes ``metrics.csv`` when it opens a non-empty log directory, so a
    resumed run would lose every earlier epoch's metrics. The rows up to the checkpoint's epoch are
    written back and the writer continues the file; rows of the epoch that was killed (and of a
    killed test) are dropped, since the resumed run logs them again.
    """
    import csv

    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities import rank_zero_only

    csv_loggers = [lg for lg in loggers if isinstance(lg, CSVLogger)]
    if not csv_loggers or rank_zero_only.rank != 0:  # only rank 0 writes the log (DDP)
        return
    done_epoch = read_checkpoint(ckpt_path).get("epoch", -1)
    for logger in csv_loggers:
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header, rows = list(reader.fieldnames or []), list(reader)

        def kept(row: dict[str, str]) -> bool:
            if any(v for k, v in row.items() if k and k.startswith("test/")):
                return False
            return not row.get("epoch") or int(float(row["epoch"])) <= done_epoch

        writer = logger.experiment  # opening it deletes metrics.csv
        with path.open("w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(row for row in rows if kept(row))
        writer.metrics_keys = header  # new keys later rewrite the header; rows so far keep their columns


def datamodule_for(config: DictConfig, **overrides: Any):
    """The run's DataModule (test split), with data.* overrides such as eval batch size."""
    node = OmegaConf.merge(config.data, overrides)
    datamodule = hydra.utils.instantiate(node)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file beside ``path``, fsync, then rename over it.

    A kill at any moment leaves either the previous file or the new one, never a truncated file:
    ``os.replace`` within one directory is atomic on POSIX and Windows.
    """
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic writes (:func:`atomic_torch_save`), ``weights_only=True`` reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)
