"""Fine-tuning a robust model (FRL, FAAL): the methods that start from ``method.init_ckpt``."""

from __future__ import annotations


class HotStart:
    """Mixin of a method that fine-tunes ``method.init_ckpt`` (FRL, FAAL).

    The method reads no file: the harness (``batlit.train``, :mod:`batlit.checkpoint.hot_start`)
    loads that checkpoint's reported weights into ``model`` before training and, when the method
    reads its validation split (``needs_val_split``), refuses a checkpoint that trained on those
    images. ``init_ckpt`` stays among the method's hyper-parameters, as the run's record of it.
    """

    fine_tunes = True  # batlit.train: method.init_ckpt may not be null
