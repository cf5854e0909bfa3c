"""batlit checkpoints: what a run stores and how anything stored is read back.

- :mod:`.store`: read a checkpoint without running any of it, rebuild its model and data
  (:func:`load_run`), write it atomically (:class:`AtomicCheckpointIO`);
- :mod:`.record`: the ``batlit`` record every training checkpoint carries (a callback);
- :mod:`.hot_start`: a fine-tuning run's starting weights and its split check (``method.init_ckpt``);
- :mod:`.weights`: weights trained elsewhere, audited like a batlit run (``weights=FILE``).

The names below load their module on first use, so that ``import batlit`` imports no torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {name: "store" for name in (
    "LoadedRun", "CHECKPOINT_FORMAT", "REPORTED_WEIGHTS", "RESUME_KEYS", "MAX_CONFIG_NODES", "MAX_STORED_IMAGE_SIZE",
    "MAX_STORED_DATA_BYTES", "check_archive", "read_checkpoint", "stored_run_config", "storable_run_config",
    "read_batlit_checkpoint", "build_model", "load_run", "check_resumable", "keep_csv_history", "datamodule_for",
    "default_data_root", "atomic_torch_save", "checked_callback_state", "AtomicCheckpointIO")}
_WHERE.update({"BatlitRecord": "record", "batlit_record": "record", "HotStart": "hot_start",
               "HotStartSplitCheck": "hot_start", "load_hot_start": "hot_start", "check_init_split": "hot_start"})

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
