"""The checks that run before any training: each names the offending key and value in one line
(:class:`~batlit.errors.ConfigError`). Torch-free: the option vocabularies come from the
library's leaf :mod:`batlit.vocab`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..vocab import ATTACK_LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULERS


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _check(cfg: DictConfig, key: str, ok: Callable[[Any], bool], rule: str) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    try:
        good = ok(value)
    except TypeError:
        good = False
    if not good:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_data_root(cfg: DictConfig) -> None:
    """A dataset that cannot be downloaded must already be at data.root (image_folder never downloads)."""
    data = cfg.get("data") or {}
    root = _get(cfg, "data.root")
    no_download = "download" in data and data.get("download") is False
    from_folder = str(data.get("_target_", "")).endswith("ImageFolderDataModule")
    if root and (no_download or from_folder) and not Path(str(root)).exists():
        raise ConfigError(f"data.root: no dataset at '{root}'" + (" and data.download=false" if no_download else ""))


def validate(cfg: DictConfig, check_paths: bool = True) -> None:
    """Range checks on the keys a user types most; cheap, and run before data or model load.

    ``check_paths=False`` (a config stored in a checkpoint) leaves out whether ``data.root``,
    ``ckpt_path`` and ``method.init_ckpt`` exist and whether ``slurm.requeue_signal`` is a signal
    here: they are about the machine that wrote it."""
    _check(cfg, "epochs", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    _check(cfg, "seed", _is_int, "an integer")
    _check(cfg, "attack.eps", lambda v: v >= 0, ">= 0")
    _check(cfg, "attack.train.eps", lambda v: v >= 0, ">= 0, or null for attack.eps")
    for phase in ("train", "val", "test"):
        _check(cfg, f"attack.{phase}.step_size", lambda v: v > 0, "> 0")
        _check(cfg, f"attack.{phase}.steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    for phase in ("train", "val", "test"):
        _check(cfg, f"attack.{phase}.precision", lambda v: v in PRECISIONS, "one of " + ", ".join(PRECISIONS))
    for phase in ("val", "test"):
        _check(cfg, f"attack.{phase}.loss", lambda v: v in ATTACK_LOSSES, "one of " + ", ".join(ATTACK_LOSSES))
        _check(cfg, f"attack.{phase}.init", lambda v: v in ("uniform", "normal", "none"),
               "one of uniform, normal, none")
    _check(cfg, "data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    _check(cfg, "data.eval_batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    _check(cfg, "data.num_workers", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    _check(cfg, "data.num_classes", lambda v: _is_int(v) and v >= 2, "an integer >= 2")
    _check(cfg, "data.crop_padding", lambda v: _is_int(v) and v >= 0, "an integer >= 0 or null")
    for key in ("data.train_subset", "data.test_subset", "data.image_size", "data.in_channels", "data.n_train",
                "data.n_test", "data.generated_classes"):
        _check(cfg, key, lambda v: _is_int(v) and v >= 1, "an integer >= 1 or null")
    _check(cfg, "data.val_size", lambda v: not isinstance(v, bool) and v >= 0, ">= 0 (a count or a fraction)")
    for key in ("data.noise",):
        _check(cfg, key, lambda v: not isinstance(v, bool) and v >= 0, ">= 0")
    _check(cfg, "optimizer.lr", lambda v: v > 0, "> 0")
    _check(cfg, "optimizer.weight_decay", lambda v: v >= 0, ">= 0")
    _check(cfg, "optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)")
    _check(cfg, "optimizer.name", lambda v: v in OPTIMIZERS, "one of " + ", ".join(OPTIMIZERS))
    _check(cfg, "scheduler.name", lambda v: v in SCHEDULERS, "one of " + ", ".join(SCHEDULERS))
    if _get(cfg, "scheduler.name") == "multistep":
        milestones = _get(cfg, "scheduler.milestones")
        if not (OmegaConf.is_list(milestones) and all(_is_int(m) and m >= 1 for m in milestones)):
            raise ConfigError(f"scheduler.milestones must be a list of epochs >= 1, got {milestones!r}")
        _check(cfg, "scheduler.count_from", lambda v: _is_int(v) and v in (0, 1),
               "1 (the lr drops at the start of 1-based epoch m) or 0 (after epoch m)")
        factors = _get(cfg, "scheduler.factors")
        if factors is not None and not (OmegaConf.is_list(factors) and len(factors) == len(milestones)):
            raise ConfigError(f"scheduler.factors must have one value per milestone ({len(milestones)}), "
                              f"got {factors!r}")
    # Lightning's default inference mode cannot be left for the evaluation attacks' input gradients
    _check(cfg, "trainer.inference_mode", lambda v: v is False, "false (evaluation attacks need input gradients)")
    _check(cfg, "resume", lambda v: isinstance(v, bool), "true or false")
    for key in ("compile", "model.channels_last", "data.on_device"):
        _check(cfg, key, lambda v: isinstance(v, bool), "true or false")
    method = cfg.get("method")
    if method:  # each method class declares its keys' rules (batlit.methods.registry); needs torch, so last
        from ..methods import check_hparams

        check_hparams(str(method.get("_target_", "")),
                      OmegaConf.to_container(method, resolve=True, throw_on_missing=False), _get(cfg, "epochs"))
    if check_paths:  # both are about this machine: its files, its operating system's signals
        _check_paths(cfg)
        requeue = _get(cfg, "slurm.requeue_signal")
        if requeue is not None:
            import signal

            if not isinstance(getattr(signal, str(requeue), None), signal.Signals):
                raise ConfigError(f"slurm.requeue_signal must name a signal such as SIGUSR1, got {requeue!r}")
    data_k, model_k = _get(cfg, "data.num_classes"), _get(cfg, "model.num_classes")
    if data_k is not None and model_k is not None and data_k != model_k:
        raise ConfigError(f"model.num_classes={model_k} does not match data.num_classes={data_k}")


def _check_paths(cfg: DictConfig) -> None:
    """The files a run reads exist: data.root (where nothing downloads), ckpt_path, method.init_ckpt."""
    _check_data_root(cfg)
    ckpt_path = _get(cfg, "ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path: no checkpoint file at '{ckpt_path}'")
    init_ckpt = _get(cfg, "method.init_ckpt")
    if init_ckpt and not Path(str(init_ckpt)).is_file():
        raise ConfigError(f"method.init_ckpt: no checkpoint file at '{init_ckpt}'")
