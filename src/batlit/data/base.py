"""The base of batlit's LightningDataModules.

Every dataset is held in memory as uint8 tensors ``(N, C, H, W)`` with long labels. A subclass only
says how to get those tensors (:meth:`ImageDataModule._load`); the base class validates arguments,
carves the validation split and the subsets (:mod:`batlit.data.splits`), builds the dataloaders
(:mod:`batlit.data.datasets`) and applies the batched crop + flip augmentation on whatever device
the batch lives on. Datasets decoded from files cache their arrays (:mod:`batlit.data.cache_entries`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, SequentialSampler

from ..errors import DataUnavailableError  # beside ConfigError (batlit.errors): both are user errors

# The names this module held before the split by concern, kept importable from here for one release.
from .cache_entries import cache_key, cached, default_cache_dir
from .datasets import (DeviceBatch, DeviceBatchSampler, EpochRandomSampler, LoadedData, TensorImageDataset,
                       fits_on_device, passthrough_collate)
from .splits import (SubsetTooLargeError, balanced_subset, class_indices, parse_val_size, select_classes,
                     split_generator, split_indices, stratified_split, val_count)

__all__ = [
    "DataUnavailableError",
    "DeviceBatch",
    "DeviceBatchSampler",
    "EpochRandomSampler",
    "ImageDataModule",
    "LoadedData",
    "SubsetTooLargeError",
    "TensorImageDataset",
    "balanced_subset",
    "cache_key",
    "cached",
    "class_indices",
    "default_cache_dir",
    "fits_on_device",
    "passthrough_collate",
    "stratified_split",
]


def _check_int(key: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"data.{key} must be an integer >= {minimum}, got {value!r}")


class ImageDataModule(L.LightningDataModule):
    """Base LightningDataModule for in-memory image classification datasets.

    Subclasses implement :meth:`_load` (and, when files may need fetching, :meth:`_ensure_files`).
    Everything else lives here, once: argument validation, a seeded stratified validation split
    carved from train, seeded stratified subsets, dataloaders yielding ``(x, y)`` with ``x`` float32
    in [0, 1] ``(N, C, H, W)``, and batched random crop + horizontal flip applied on device in
    :meth:`on_after_batch_transfer` while training.

    Args:
        root: folder holding (or receiving) the dataset files.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        val_size: fraction of train (``< 1``) or number of train samples (``>= 1``) held out for
            validation, stratified; 0 disables validation. Never taken from test.
        train_subset, test_subset: keep a seeded stratified subset of this many samples (all of
            them when the split is smaller).
        test_subset_seed: when given, the test subset is instead class-balanced
            (:func:`balanced_subset`) and drawn from this seed alone, whatever ``seed`` is, so runs
            trained with different seeds are evaluated on the same images (``batlit.evaluate``'s
            ``eval_seed``); a ``test_subset`` larger than the test split is then an error.
        augment: random crop (zero padding ``crop_padding``) + horizontal flip while training.
        crop_padding: padding of the random crop; ``None`` means image size // 8.
        seed: seed of the validation split and the subsets.
        download: fetch missing files where the dataset supports it.
        num_classes: expected number of classes; a mismatch with the data raises ``ValueError``.
        **kwargs: only the keys in ``_config_only``; they live in the yaml for interpolation.
    """

    #: Keys the data configs carry for other config groups (model normalisation, sizes). They are
    #: accepted and ignored, except that ``in_channels``/``image_size`` are checked against the data.
    _config_only = ("mean", "std", "in_channels", "image_size", "name")
    #: Name reported by :meth:`describe` unless the config gives ``name``.
    dataset_name = "images"
    #: Decode in prepare_data (one process per node) so that a slow first decode fills the cache
    #: once and the other DDP ranks' setup() loads it, instead of every rank decoding at once.
    _load_in_prepare_data = False

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_size: float | int = 0,
        train_subset: int | None = None,
        test_subset: int | None = None,
        test_subset_seed: int | None = None,
        augment: bool = True,
        crop_padding: int | None = 4,
        seed: int = 0,
        download: bool = True,
        num_classes: int | None = None,
        on_device: bool = False,
        classes: Sequence[int | str] | None = None,
        exclude_classes: Sequence[int | str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        unknown = [k for k in kwargs if k not in self._config_only]
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword argument(s) {unknown}; "
                f"config-only keys allowed: {list(self._config_only)}"
            )
        _check_int("batch_size", batch_size, 1)
        _check_int("eval_batch_size", eval_batch_size, 1, allow_none=True)
        _check_int("num_workers", num_workers, 0)
        _check_int("train_subset", train_subset, 1, allow_none=True)
        _check_int("test_subset", test_subset, 1, allow_none=True)
        _check_int("test_subset_seed", test_subset_seed, 0, allow_none=True)
        _check_int("crop_padding", crop_padding, 0, allow_none=True)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"data.seed must be an integer, got {seed!r}")
        _check_int("num_classes", num_classes, 1, allow_none=True)
        parse_val_size(val_size)  # refused here, before any data is loaded

        self.root = str(root)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size) if eval_batch_size is not None else self.batch_size
        self.num_workers = int(num_workers)
        self.val_size = val_size
        self.train_subset = train_subset
        self.test_subset = test_subset
        self.test_subset_seed = test_subset_seed
        self.augment_enabled = bool(augment)  # `self.augment` is the method
        self.crop_padding = crop_padding
        self.seed = int(seed)
        self.download = bool(download)
        self.on_device = bool(on_device)
        if classes is not None and exclude_classes is not None:
            raise ValueError("data.classes and data.exclude_classes: set one of them, not both")
        self.classes = list(classes) if classes is not None else None
        self.exclude_classes = list(exclude_classes) if exclude_classes is not None else None
        self._resident: dict[tuple[int, str], Tensor] = {}
        self._expected_num_classes = num_classes
        self._config_hints = dict(kwargs)
        self.name = str(kwargs.get("name") or self.dataset_name)

        # Filled by setup().
        self.num_classes: int | None = num_classes
        self.class_names: list[str] | None = None
        self.in_channels: int | None = None
        self.image_size: tuple[int, int] | None = None
        self.train_x = self.train_y = self.val_x = self.val_y = self.test_x = self.test_y = None
        self.test_index: Tensor | None = None  # each kept test image's index in the test split as loaded
        self._is_setup = False
        self._prepared: LoadedData | None = None

    # ---- subclass interface ----------------------------------------------------------------------

    def _ensure_files(self) -> None:
        """Make sure the files exist (download if allowed) or raise :class:`DataUnavailableError`."""

    def _load(self) -> LoadedData:
        """Return the full train and test sets. Implemented by every subclass."""
        raise NotImplementedError

    # ---- LightningDataModule hooks ---------------------------------------------------------------

    def prepare_data(self) -> None:
        """Ensure the files exist (Lightning calls this on one process per node)."""
        self._ensure_files()
        if self._load_in_prepare_data and not self._is_setup and self._prepared is None:
            self._prepared = self._load()  # kept for this process's setup()

    def setup(self, stage: str | None = None) -> None:
        """Load the data once (idempotent), then build the validation split and subsets."""
        if self._is_setup:
            return
        data, self._prepared = (self._prepared or self._load()), None
        self._check_loaded(data)
        test_index = torch.arange(data.test_y.numel())
        data, test_kept = select_classes(data, self.classes, self.exclude_classes, f" of {self.name}")
        if test_kept is not None:
            test_index = test_index[test_kept]
        class_names = list(data.class_names)
        if self._expected_num_classes is not None and self._expected_num_classes != len(class_names):
            raise ValueError(
                f"data.num_classes is {self._expected_num_classes} but the {self.name} data has "
                f"{len(class_names)} classes ({self.root})"
            )
        _, c, h, w = data.train_x.shape
        self._check_hint("in_channels", c, c)
        self._check_hint("image_size", (h, w), h if h == w else (h, w))

        train_x, train_y = data.train_x, data.train_y.long()
        val_x = val_y = None
        n_val = val_count(self.val_size, train_y.numel())
        if n_val >= train_y.numel():
            raise ValueError(
                f"data.val_size={self.val_size!r} asks for {n_val} validation samples but the training "
                f"set has only {train_y.numel()}"
            )
        val_idx, train_idx = split_indices(train_y, self.val_size, self.seed, self.train_subset)
        if val_idx.numel():
            val_x, val_y = train_x[val_idx], train_y[val_idx]
        if train_idx.numel() < train_y.numel():  # else all of them: no copy
            train_x, train_y = train_x[train_idx], train_y[train_idx]
        if self.test_subset_seed is None:
            keep = torch.arange(data.test_y.numel())
            if self.test_subset is not None and self.test_subset < data.test_y.numel():
                keep, _ = stratified_split(data.test_y.long(), self.test_subset, split_generator(self.seed, 3))
        elif self.test_subset is None:
            keep = torch.arange(data.test_y.numel())
        else:
            if self.test_subset > data.test_y.numel():
                raise SubsetTooLargeError(self.test_subset, data.test_y.numel(), self.name)
            keep = balanced_subset(data.test_y, self.test_subset,
                                   torch.Generator().manual_seed(int(self.test_subset_seed)))
        test_x, test_y, self.test_index = data.test_x[keep], data.test_y.long()[keep], test_index[keep]

        self.train_x, self.train_y = train_x.contiguous(), train_y.contiguous()
        self.val_x = val_x.contiguous() if val_x is not None else None
        self.val_y = val_y.contiguous() if val_y is not None else None
        self.test_x, self.test_y = test_x.contiguous(), test_y.contiguous()
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.in_channels = int(c)
        self.image_size = (int(h), int(w))
        self._is_setup = True

    def train_labels(self) -> Tensor:
        """The labels of the whole training split as loaded, after ``data.classes`` /
        ``data.exclude_classes`` and before the validation split and the subset: the labels whose
        indices :func:`~batlit.data.splits.split_indices` draws for any data settings."""
        data = self._load()
        return select_classes(data, self.classes, self.exclude_classes, f" of {self.name}")[0].train_y.long()

    def _check_loaded(self, data: LoadedData) -> None:
        for split in ("train", "test"):
            x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
            if x.dtype != torch.uint8 or x.ndim != 4 or y.shape != (x.shape[0],):
                raise TypeError(
                    f"{type(self).__name__}._load returned {split}_x {x.dtype} {tuple(x.shape)} and "
                    f"{split}_y {tuple(y.shape)}; expected uint8 (N, C, H, W) and (N,)"
                )
        if data.train_x.shape[1:] != data.test_x.shape[1:]:
            raise ValueError(
                f"train images are {tuple(data.train_x.shape[1:])} but test images are "
                f"{tuple(data.test_x.shape[1:])} (C, H, W) in {self.root}"
            )
        if data.train_x.shape[0] == 0 or data.test_x.shape[0] == 0:
            raise ValueError(f"empty train or test split in {self.root}")
        k = len(data.class_names)
        for split, y in (("train", data.train_y), ("test", data.test_y)):
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
                raise ValueError(f"{split} labels must lie in [0, {k}) for {k} class names")

    def _check_hint(self, key: str, actual: Any, shown: Any) -> None:
        # The yaml's in_channels/image_size feed the model config by interpolation; catch a
        # disagreement here rather than as a shape error deep inside the model.
        hint = self._config_hints.get(key)
        if hint is None:
            return
        want = tuple(int(v) for v in hint) if isinstance(hint, Sequence) and not isinstance(hint, str) else hint
        if key == "image_size" and isinstance(want, int):
            want = (want, want)
        if want != actual:
            raise ValueError(f"data.{key} is {hint!r} but the {self.name} data has {key} {shown!r} ({self.root})")

    # ---- dataloaders -----------------------------------------------------------------------------

    def _on_accelerator(self, tensor: Tensor) -> Tensor:
        """``data.on_device``: the split is copied to the trainer's GPU once and batches are gathered
        there, so no batch crosses the bus; a no-op on the CPU or without a trainer."""
        device = self.trainer.strategy.root_device if self.on_device and self.trainer is not None else None
        if device is None or device.type == "cpu":
            return tensor
        key = (id(tensor), str(device))
        if key not in self._resident:
            if not fits_on_device(tensor.numel() * tensor.element_size(), device):
                warnings.warn(f"data.on_device: a {tensor.numel() * tensor.element_size() / 2**30:.1f} GiB split would "
                              f"take more than a quarter of {device}'s free memory; it stays in host memory "
                              "(batches cross the bus as with data.on_device=false)", stacklevel=2)
                self.on_device = False
                return tensor
            self._resident[key] = tensor.to(device)
        return self._resident[key]

    def _loader(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool) -> DataLoader:
        resident_x, resident_y = self._on_accelerator(x), self._on_accelerator(y)
        on_gpu = resident_x.device.type != "cpu"
        dataset = TensorImageDataset(resident_x, resident_y)
        sampler = EpochRandomSampler(dataset, self.seed) if shuffle else SequentialSampler(dataset)
        if on_gpu:  # one index upload per epoch, not per batch
            return DataLoader(dataset, batch_sampler=DeviceBatchSampler(sampler, batch_size, drop_last=False),
                              num_workers=0, collate_fn=passthrough_collate,
                              generator=split_generator(self.seed, 3_000))
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler if shuffle else None,
            # its own generator: creating an iterator draws a worker base seed, which must not
            # shift the global stream that augmentation and attack starts use
            generator=split_generator(self.seed, 3_000),
            drop_last=False,
            num_workers=0 if on_gpu else self.num_workers,  # worker processes cannot share GPU tensors
            collate_fn=passthrough_collate,
            persistent_workers=self.num_workers > 0 and not on_gpu,
        )

    def _require_setup(self) -> None:
        if not self._is_setup:
            self.setup()

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        return self._loader(self.train_x, self.train_y, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        """The validation split, or ``[]`` (Lightning then skips validation) when val_size is 0."""
        self._require_setup()
        if self.val_x is None:
            return []
        return self._loader(self.val_x, self.val_y, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self._require_setup()
        return self._loader(self.test_x, self.test_y, self.eval_batch_size, shuffle=False)

    # ---- augmentation ----------------------------------------------------------------------------

    def augment(self, x: Tensor) -> Tensor:
        """Random crop (zero padding ``crop_padding``) + horizontal flip of a batch ``(N, C, H, W)``.

        Batched on ``x``'s device with the global torch RNG of that device (seeded by Lightning's
        ``seed_everything``): per-sample offsets and flips are drawn once, and the crop and flip
        are a single gather with advanced indexing.
        """
        if x.ndim != 4:
            raise ValueError(f"augment expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        pad = self.crop_padding if self.crop_padding is not None else max(h, w) // 8
        dev = x.device
        if pad > 0:
            x = F.pad(x, (pad, pad, pad, pad))  # zeros
            oy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev)
            ox = torch.randint(0, 2 * pad + 1, (n, 1), device=dev)
        else:
            oy = ox = torch.zeros(n, 1, dtype=torch.long, device=dev)
        flip = torch.rand(n, 1, device=dev) < 0.5
        cols = torch.arange(w, device=dev)
        # Flip by reading columns right to left: the flip is folded into the crop's gather.
        cols = ox + torch.where(flip, w - 1 - cols, cols)  # (N, W)
        rows = oy + torch.arange(h, device=dev)  # (N, H)
        batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
        chan = torch.arange(c, device=dev).view(1, c, 1, 1)
        return x[batch, chan, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches after they reach the device (never val/test batches)."""
        if self.trainer is not None and self.trainer.training and self.augment_enabled:
            x, y = batch
            return self.augment(x), y
        return batch

    # ---- reporting -------------------------------------------------------------------------------

    def describe(self) -> dict:
        """A summary for logs: name, split sizes, classes and image geometry (calls setup if needed)."""
        self._require_setup()
        return {
            "name": self.name,
            "root": self.root,
            "train_size": int(self.train_y.numel()),
            "val_size": int(self.val_y.numel()) if self.val_y is not None else 0,
            "test_size": int(self.test_y.numel()),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "in_channels": self.in_channels,
            "image_size": list(self.image_size),
        }
