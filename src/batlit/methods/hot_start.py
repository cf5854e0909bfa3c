"""Fine-tuning a robust model (FRL, FAAL): ``method.init_ckpt`` and the check that this run's
validation images were not training images of that checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from ..data.splits import split_indices  # noqa: F401 - importable from here as before (FRL, tests)

# data.* keys that must agree for two runs to draw their splits from the same images in the same order
SAME_IMAGES_KEYS = ("_target_", "classes", "exclude_classes")


class HotStart:
    """Mixin of a method that fine-tunes ``method.init_ckpt`` (FRL, FAAL).

    Call :meth:`load_init` in ``__init__``; when the method reads its validation split
    (``needs_val_split``), ``setup`` refuses a checkpoint that trained on those images.
    """

    fine_tunes = True  # batlit.train: method.init_ckpt may not be null
    _init_data: dict[str, Any] | None = None  # the hot start's data settings (setup checks them)
    _init_path: str | None = None

    def load_init(self, path: str) -> None:
        """Start from the reported weights of the batlit checkpoint at ``path`` (same model and classes)."""
        from omegaconf import OmegaConf

        from ..checkpoint import REPORTED_WEIGHTS, read_batlit_checkpoint

        if not Path(path).is_file():
            raise ValueError(f"method.init_ckpt: no checkpoint file at '{path}'")
        ckpt, stored = read_batlit_checkpoint(path, "method.init_ckpt")  # its stored config names no code
        # the weights that run reported (CFA: its averaged model), as evaluate would measure them
        reported = ckpt["batlit"].get("reported_weights", "model")
        if reported not in REPORTED_WEIGHTS:
            raise ValueError(f"method.init_ckpt: '{path}' names reported weights {reported!r}")
        prefix = f"{reported}."
        state = {k[len(prefix):]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith(prefix)}
        own = self.model.state_dict()
        if state.keys() != own.keys() or any(state[k].shape != own[k].shape for k in own):
            raise ValueError(f"method.init_ckpt: '{path}' holds another architecture or class count "
                             f"than model={type(self.model).__name__} with {self.num_classes} classes")
        self.model.load_state_dict(state)
        data = stored.get("data")
        self._init_data = OmegaConf.to_container(data, resolve=True) if data is not None else None
        self._init_path = str(path)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self._init_data is not None and self.needs_val_split:
            self.check_init_split(self.trainer.datamodule)

    def check_init_split(self, datamodule: Any) -> None:
        """One line when this run's validation images were training images of ``init_ckpt``.

        The multipliers move on per-class errors measured on the validation split; images the hot
        start trained on are easier for it, which biases those errors and their gaps. Both splits are
        recomputed from the two runs' data settings (:func:`~batlit.data.splits.split_indices`) on this
        run's labels: an error, or with ``allow_val_overlap`` a warning. A hot start on other data
        (``SAME_IMAGES_KEYS`` differ) cannot be checked and says so. A dataset whose images change
        with ``data.seed`` (``data=synthetic``) counts a seed change as overlap.
        """
        from ..config import ConfigError
        from ..data.base import ImageDataModule

        run = (self.hparams.get("run_config") or {}).get("data") or {}
        hot, path = self._init_data or {}, self._init_path
        if not isinstance(datamodule, ImageDataModule) or not run:
            return  # built outside batlit.train: no run settings to compare with
        differ = [k for k in SAME_IMAGES_KEYS if run.get(k) != hot.get(k)]
        if differ:
            self._warn(f"method.init_ckpt: '{path}' was trained on other data (data.{', data.'.join(differ)} differ): "
                       "whether this run's validation images were among its training images is not checked")
            return
        labels = datamodule.train_labels()
        val_idx, _ = split_indices(labels, datamodule.val_size, datamodule.seed)
        _, hot_train = split_indices(labels, hot.get("val_size") or 0, int(hot.get("seed", 0)), hot.get("train_subset"))
        seen = int(torch.isin(val_idx, hot_train).sum())
        if not seen:
            return
        message = (f"method.init_ckpt: {seen} of this run's {len(val_idx)} validation images were training images "
                   f"of '{path}' (it had data.val_size={hot.get('val_size')}, data.seed={hot.get('seed')}; "
                   f"this run data.val_size={datamodule.val_size}, data.seed={datamodule.seed}), which biases "
                   "the per-class statistics it reads there: train the hot start with this split held out (the same data.seed "
                   "and data.val_size, e.g. experiment=pgd_at_hot_start_cifar10) or set method.allow_val_overlap=true")
        if not self.allow_val_overlap:
            raise ConfigError(message)
        self._warn(message)

    def _warn(self, message: str) -> None:
        trainer = self._trainer
        if trainer is None or trainer.is_global_zero:  # once under DDP
            print(f"batlit: warning: {message}", file=sys.stderr)

