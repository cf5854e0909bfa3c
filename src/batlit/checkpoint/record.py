"""The ``batlit`` record every checkpoint of ``python -m batlit.train`` carries, written by a
callback of the harness (the methods know nothing of checkpoint files)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from .. import __version__
from .store import CHECKPOINT_FORMAT


def batlit_record(method: Any) -> dict[str, Any]:
    """What :func:`batlit.checkpoint.store.load_run` reads back: version, layout, classes, method,
    the weights it reports (CFA: its averaged model) and the model and data it trained."""
    run = method.hparams.get("run_config") or {}
    return {"version": __version__, "format": CHECKPOINT_FORMAT, "class_names": method.class_names,
            "num_classes": method.num_classes, "method": type(method).__name__,
            "reported_weights": method.reported_weights,
            "model": (run.get("model") or {}).get("_target_"),
            "data": (run.get("data") or {}).get("_target_")}


class BatlitRecord(Callback):
    """Adds :func:`batlit_record` under ``checkpoint["batlit"]`` to every checkpoint the trainer saves."""

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint["batlit"] = batlit_record(pl_module)
