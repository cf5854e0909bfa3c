"""A fine-tuning run's starting point (FRL, FAAL: ``method.init_ckpt``), read by the harness.

The method never reads a file: :func:`load_hot_start` puts the checkpoint's reported weights into
the method's model, and :class:`HotStartSplitCheck` refuses, before the first epoch, a checkpoint
that trained on this run's validation images (``batlit.train`` adds both).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from ..data.base import ImageDataModule
from ..data.splits import split_indices
from ..errors import ConfigError
from .store import REPORTED_WEIGHTS, read_batlit_checkpoint

# data.* keys that must agree for two runs to draw their splits from the same images in the same order
SAME_IMAGES_KEYS = ("_target_", "classes", "exclude_classes")


@dataclass
class HotStart:
    """Where a fine-tuning run started: the checkpoint's path and the data settings it trained with."""

    path: str
    data: dict[str, Any] | None


def load_hot_start(method: Any, path: str) -> HotStart:
    """Put the reported weights of the batlit checkpoint at ``path`` into ``method.model`` (same
    architecture and class count): the weights that run reported (CFA: its averaged model), as
    evaluate would measure them. A mismatch is one :class:`ConfigError` line naming the key."""
    if not Path(path).is_file():
        raise ConfigError(f"method: method.init_ckpt: no checkpoint file at '{path}'")
    ckpt, stored = read_batlit_checkpoint(path, "method.init_ckpt")  # its stored config names no code
    reported = ckpt["batlit"].get("reported_weights", "model")
    if reported not in REPORTED_WEIGHTS:
        raise ConfigError(f"method: method.init_ckpt: '{path}' names reported weights {reported!r}")
    prefix = f"{reported}."
    state = {k[len(prefix):]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith(prefix)}
    own = method.model.state_dict()
    if state.keys() != own.keys() or any(state[k].shape != own[k].shape for k in own):
        raise ConfigError(f"method: method.init_ckpt: '{path}' holds another architecture or class count "
                          f"than model={type(method.model).__name__} with {method.num_classes} classes")
    method.model.load_state_dict(state)
    data = stored.get("data")
    return HotStart(str(path), OmegaConf.to_container(data, resolve=True) if data is not None else None)


def check_init_split(hot: HotStart, run_data: dict[str, Any], datamodule: Any, allow_val_overlap: bool,
                     warn: Any = None) -> None:
    """One line when this run's validation images were training images of ``init_ckpt``.

    The multipliers move on per-class errors measured on the validation split; images the hot
    start trained on are easier for it, which biases those errors and their gaps. Both splits are
    recomputed from the two runs' data settings (:func:`batlit.data.splits.split_indices`) on this run's labels: an
    error, or with ``allow_val_overlap`` a warning (``warn``; by default on stderr). A hot start on
    other data (``SAME_IMAGES_KEYS`` differ) cannot be checked and says so. A dataset whose images
    change with ``data.seed`` (``data=synthetic``) counts a seed change as overlap.
    """
    warn = warn or _warn
    run, hot_data, path = run_data or {}, hot.data or {}, hot.path
    if not isinstance(datamodule, ImageDataModule) or not run:
        return  # built outside batlit.train: no run settings to compare with
    differ = [k for k in SAME_IMAGES_KEYS if run.get(k) != hot_data.get(k)]
    if differ:
        warn(f"method.init_ckpt: '{path}' was trained on other data (data.{', data.'.join(differ)} differ): "
             "whether this run's validation images were among its training images is not checked")
        return
    labels = datamodule.train_labels()
    val_idx, _ = split_indices(labels, datamodule.val_size, datamodule.seed)
    _, hot_train = split_indices(labels, hot_data.get("val_size") or 0, int(hot_data.get("seed", 0)),
                                 hot_data.get("train_subset"))
    seen = int(torch.isin(val_idx, hot_train).sum())
    if not seen:
        return
    message = (f"method.init_ckpt: {seen} of this run's {len(val_idx)} validation images were training images "
               f"of '{path}' (it had data.val_size={hot_data.get('val_size')}, data.seed={hot_data.get('seed')}; "
               f"this run data.val_size={datamodule.val_size}, data.seed={datamodule.seed}), which biases "
               "the per-class statistics it reads there: train the hot start with this split held out (the same data.seed "
               "and data.val_size, e.g. experiment=pgd_at_hot_start_cifar10) or set method.allow_val_overlap=true")
    if not allow_val_overlap:
        raise ConfigError(message)
    warn(message)


def _warn(message: str) -> None:
    print(f"batlit: warning: {message}", file=sys.stderr)


class HotStartSplitCheck(Callback):
    """Runs :func:`check_init_split` when fitting starts (before the method's own setup), for a
    method that reads its validation split (``needs_val_split``); warnings once under DDP."""

    def __init__(self, hot: HotStart) -> None:
        self.hot = hot

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit" or self.hot.data is None or not pl_module.needs_val_split:
            return
        run_data = (pl_module.hparams.get("run_config") or {}).get("data") or {}

        def warn(message: str) -> None:
            if trainer.is_global_zero:
                _warn(message)

        check_init_split(self.hot, run_data, trainer.datamodule, bool(getattr(pl_module, "allow_val_overlap", False)), warn)
