"""Fine-tuning a robust model (FRL, FAAL): the methods that start from ``method.init_ckpt``."""

from __future__ import annotations

from typing import Any

from . import registry


class HotStart:
    """Mixin of a method that fine-tunes ``method.init_ckpt`` (FRL, FAAL).

    Args:
        init_ckpt: a batlit checkpoint of the same architecture and class count to fine-tune. The
            method reads no file: the harness (``batlit.train``, :mod:`batlit.checkpoint.hot_start`)
            loads its reported weights into ``model`` before training. It stays among the method's
            hyper-parameters, as the run's record of it.
        allow_val_overlap: a method that reads its validation split (``needs_val_split``) refuses a
            checkpoint that trained on some of those images; with this, a warning instead
            (:func:`batlit.checkpoint.hot_start.check_init_split`).
    """

    fine_tunes = True  # batlit.train: method.init_ckpt may not be null
    hparam_rules = {"init_ckpt": registry.INIT_CKPT}

    def __init__(self, *args: Any, init_ckpt: str | None = None, allow_val_overlap: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_val_overlap = bool(allow_val_overlap)
