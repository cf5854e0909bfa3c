"""The glue between the DataModules that decode image files and :mod:`batlit.data.cache`: a
:class:`~batlit.data.datasets.LoadedData` as a verified cache entry and back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .datasets import LoadedData

__all__ = ["cache_key", "cached", "default_cache_dir"]

# batlit.data.cache is imported on first use, not with the package: ``python -m batlit.data.cache``
# then runs it once (runpy warns about a module the package has already imported).

_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/batlit`` or ``~/.cache/batlit``: never inside a (possibly read-only) data root."""
    from . import cache

    return cache.default_cache_dir()


def cache_key(payload: Any) -> str:
    """A short stable hash of a JSON-serialisable description of the inputs."""
    from . import cache

    return cache.cache_key(payload)


def _check_entry(arrays: dict, info: dict) -> None:
    names = info.get("class_names")
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise ValueError("its class_names are not a list of strings")
    if set(arrays) != set(_ARRAYS):
        raise ValueError(f"it holds {sorted(arrays)}, not {list(_ARRAYS)}")


def _to_loaded(arrays: dict, info: dict) -> LoadedData:
    return LoadedData(
        train_x=torch.from_numpy(arrays["train_x"]),
        train_y=torch.from_numpy(arrays["train_y"]).long(),
        test_x=torch.from_numpy(arrays["test_x"]),
        test_y=torch.from_numpy(arrays["test_y"]).long(),
        class_names=list(info["class_names"]),
    )


def _from_loaded(data: LoadedData) -> tuple[dict, dict]:
    return {name: getattr(data, name).numpy() for name in _ARRAYS}, {"class_names": list(data.class_names)}


def cached(path: Path, key: str, build: Callable[[], LoadedData]) -> LoadedData:
    """The cache entry at ``path`` if valid for ``key``; else ``build()``, under the entry's lock
    (a concurrent process waits, then reads it), saved. Nothing is written when ``build`` raises."""
    from . import cache

    arrays, info = cache.get_or_build(Path(path), key, lambda: _from_loaded(build()), _check_entry)
    return _to_loaded(arrays, info)
