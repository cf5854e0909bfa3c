"""The ``${batlit_...}`` resolvers conf/'s files name, registered by :func:`register_resolvers`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .hardware import fast_bf16, fast_precision, gpu_or, on_gpu


def project_root() -> str:
    """BATLIT_ROOT if set; the source checkout for an editable install; else the working directory."""
    if os.environ.get("BATLIT_ROOT"):
        return os.environ["BATLIT_ROOT"]
    checkout = Path(__file__).resolve().parents[3]  # src/batlit/config/resolvers.py
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "batlit").is_dir():
        return str(checkout)
    return os.getcwd()


def run_dir_of(ckpt: str) -> str:
    """The training run directory a checkpoint belongs to (``<run>/checkpoints/last.ckpt``)."""
    path = Path(str(ckpt)).expanduser().resolve()
    return str(path.parent.parent if path.parent.name == "checkpoints" else path.parent)


def sweep_group() -> str | None:
    """In a multirun, a name its jobs share (W&B group): the task and the sweep folder; else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return f"{hydra_cfg.job.name}-{Path(hydra_cfg.sweep.dir).name}"


def run_name() -> str:
    """method/data/model, plus a multirun job's overrides: what a dashboard row needs to say."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    picked = hydra_cfg.runtime.choices
    name = "/".join(str(picked.get(g)) for g in ("method", "data", "model") if picked.get(g))
    overrides = hydra_cfg.job.override_dirname
    return f"{name} {overrides}" if sweep_group() and overrides else name


def kept_classes(total: Any, classes: Any = None, exclude: Any = None) -> Any:
    """``${batlit_kept:10,${.classes},${.exclude_classes}}``: the class count after data.classes /
    data.exclude_classes (which the model's num_classes follows); null stays null (discovered)."""
    if total is None:
        return None
    if classes is not None:
        return len(set(classes))
    return int(total) - len(set(exclude)) if exclude is not None else int(total)


def register_resolvers() -> None:
    for name, fn in (("batlit_root", project_root), ("batlit_run_dir", run_dir_of),
                     ("batlit_sweep_group", sweep_group), ("batlit_run_name", run_name),
                     ("batlit_on_gpu", lambda acc="auto": on_gpu(acc)),
                     ("batlit_gpu_or", lambda a, b, acc="auto": gpu_or(a, b, acc)),
                     ("batlit_fast_bf16", lambda acc="auto": fast_bf16(acc)),
                     ("batlit_precision", lambda acc="auto": fast_precision(acc)),
                     ("batlit_kept", kept_classes)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
