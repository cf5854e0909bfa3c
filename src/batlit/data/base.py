"""Shared base for batlit's LightningDataModules.

Every dataset is held in memory as uint8 tensors ``(N, C, H, W)`` with long labels. A subclass only
says how to get those tensors (:meth:`ImageDataModule._load`); the base class validates arguments,
carves the validation split and the subsets, builds the dataloaders and applies the batched
crop + flip augmentation on whatever device the batch lives on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from ..errors import DataUnavailableError  # beside ConfigError (batlit.errors): both are user errors

__all__ = [
    "DataUnavailableError",
    "ImageDataModule",
    "LoadedData",
    "SubsetTooLargeError",
    "TensorImageDataset",
    "cache_key",
    "cached",
    "default_cache_dir",
    "load_cached",
    "passthrough_collate",
    "save_cached",
    "balanced_subset",
    "stratified_split",
]

@dataclass
class LoadedData:
    """What a subclass's ``_load`` returns: the full train and test sets as uint8/long tensors."""

    train_x: Tensor  # uint8 (N, C, H, W)
    train_y: Tensor  # long (N,)
    test_x: Tensor
    test_y: Tensor
    class_names: list[str]

    @classmethod
    def from_splits(cls, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                    class_names: list[str]) -> LoadedData:
        """From (images, labels) pairs of the train and the test split."""
        return cls(train_x=train[0], train_y=train[1], test_x=test[0], test_y=test[1], class_names=class_names)


# --------------------------------------------------------------------------------------------------
# Dataset, sampler and collation
# --------------------------------------------------------------------------------------------------


class EpochRandomSampler(RandomSampler):
    """A RandomSampler whose order is a function of (seed, epoch) alone.

    Lightning calls ``set_epoch`` before each training epoch, so a run resumed from an epoch's
    checkpoint sees the same order as an uninterrupted one, whatever the global RNG did before.
    Being a RandomSampler, Lightning still swaps in a DistributedSampler under DDP.
    """

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = _generator(self.seed, 1_000 + int(epoch))

def class_indices(entries: Sequence[int | str], names: Sequence[str], key: str, where: str = "") -> list[int]:
    """Class entries (indices or names) as indices into ``names``; ``ValueError`` naming ``key``
    and the first entry that is neither."""
    picked = []
    for entry in entries:
        if isinstance(entry, str) and entry in names:
            picked.append(list(names).index(entry))
        elif isinstance(entry, int) and not isinstance(entry, bool) and 0 <= entry < len(names):
            picked.append(int(entry))
        else:
            raise ValueError(f"{key}: {entry!r} is neither a class index in [0, {len(names)}) nor a class "
                             f"name{where} ({', '.join(names[:12])}{', ...' if len(names) > 12 else ''})")
    return picked


class TensorImageDataset(Dataset):
    """A map-style dataset over in-memory uint8 images, yielding float32 images in [0, 1].

    ``__getitems__`` returns a whole collated batch ``(x, y)`` with one indexing op and one
    uint8 -> float conversion; the DataLoader's fetcher hands that result to
    :func:`passthrough_collate`, which returns it unchanged. This avoids building and stacking
    one small tensor per sample.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index].float().div_(255), self.labels[index]

    def __getitems__(self, indices: Sequence[int] | "DeviceBatch") -> tuple[Tensor, Tensor]:
        if isinstance(indices, DeviceBatch):  # on-device data: a slice of the epoch's uploaded order
            idx = indices.rows(self.images.device)
        else:
            idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        return self.images[idx].float().div_(255), self.labels[idx]


class DeviceBatch:
    """Batch ``start:stop`` of one epoch's sample order, which is uploaded to the data's device once
    per epoch (by the first batch that needs it) instead of a Python index list per batch."""

    def __init__(self, order: list, start: int, stop: int) -> None:
        self.order, self.start, self.stop = order, start, stop  # order: [host tensor, {device: copy}]

    def rows(self, device: torch.device) -> Tensor:
        host, copies = self.order
        key = str(device)
        if key not in copies:
            copies.clear()
            copies[key] = host.to(device)  # the epoch's one upload
        return copies[key][self.start:self.stop]

    def __len__(self) -> int:
        return self.stop - self.start


class DeviceBatchSampler(BatchSampler):
    """A BatchSampler for data held on the GPU (``data.on_device``): it draws the epoch's whole
    order from its sampler (a DistributedSampler under DDP, swapped in by Lightning as for any
    BatchSampler), and yields :class:`DeviceBatch` slices of it, so no batch uploads indices."""

    def __iter__(self) -> Iterator[DeviceBatch]:  # type: ignore[override]
        order = [torch.as_tensor(list(self.sampler), dtype=torch.long), {}]
        n = len(order[0])
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            if self.drop_last and stop - start < self.batch_size:
                break
            yield DeviceBatch(order, start, stop)

def passthrough_collate(batch: Any) -> Any:
    """Collate function for :class:`TensorImageDataset`: ``__getitems__`` already collated.

    Module level (not a lambda) so that it pickles for DataLoader worker processes.
    """
    return batch

# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------

def _generator(seed: int, salt: int) -> torch.Generator:
    # Independent streams for the val split and each subset, so e.g. changing test_subset does not
    # change which training images are kept.
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + salt) % (2**63))

def stratified_split(labels: Tensor, n_first: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Randomly split ``range(len(labels))`` into ``n_first`` and the rest, stratified by label.

    Each class contributes ``n_first * count_c / N`` samples rounded by largest remainder, so the
    first part has exactly ``n_first`` samples and class proportions as close as integers allow.
    Returns both index sets sorted ascending.
    """
    n = labels.numel()
    if not 0 <= n_first <= n:
        raise ValueError(f"cannot take {n_first} of {n} samples")
    labels = labels.long()
    counts = torch.bincount(labels)
    # Integer arithmetic so the quotas sum to n_first exactly.
    numer = counts * n_first
    quota = numer // n
    short = n_first - int(quota.sum())
    if short > 0:
        by_remainder = torch.sort(numer % n, descending=True, stable=True).indices
        quota[by_remainder[:short]] += 1
    perm = torch.randperm(n, generator=generator)
    # Group the random permutation by class, keeping its random order within each class.
    grouped = perm[torch.sort(labels[perm], stable=True).indices]
    grouped_labels = labels[grouped]
    class_start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - class_start[grouped_labels]
    take = rank < quota[grouped_labels]
    return grouped[take].sort().values, grouped[~take].sort().values

class SubsetTooLargeError(ValueError):
    """A class-balanced test subset asked for more images than the test split holds."""

    def __init__(self, asked: int, available: int, name: str) -> None:
        super().__init__(f"test_subset={asked} is more than the {available} test images of {name}")
        self.asked, self.available, self.name = asked, available, name


def balanced_subset(labels: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` indices into ``labels``, as equal a count per class as the classes allow, sorted ascending.

    The rule: every class gets ``n // K`` images; when a class has fewer, it gives all it has and its
    shortfall is shared equally among the classes that have more (repeatedly, until every share
    fits); the ``r`` images left over when the shares do not divide evenly go one each to the ``r``
    lowest-numbered classes that still have images to give. Within a class the images are the first
    ones of a random permutation of the whole split drawn from ``generator``, so a smaller ``n``
    with the same generator seed keeps a subset of a larger ``n``'s images.
    """
    labels = labels.long()
    total = labels.numel()
    if not 0 <= n <= total:
        raise ValueError(f"cannot take {n} of {total} samples")
    counts = torch.bincount(labels).tolist()
    quota = [0] * len(counts)
    open_classes = [c for c, k in enumerate(counts) if k > 0]
    left = n
    while left > 0 and open_classes:
        share = left // len(open_classes)
        small = [c for c in open_classes if counts[c] - quota[c] <= share]
        if small:  # these classes give everything they have; the rest share what is left
            for c in small:
                left -= counts[c] - quota[c]
                quota[c] = counts[c]
            open_classes = [c for c in open_classes if c not in small]
            continue
        for c in open_classes:
            quota[c] += share
        for c in open_classes[:left - share * len(open_classes)]:
            quota[c] += 1
        left = 0
    perm = torch.randperm(total, generator=generator)
    grouped = perm[torch.sort(labels[perm], stable=True).indices]  # by class, in random order within each
    class_start = torch.cumsum(torch.tensor(counts), 0) - torch.tensor(counts)
    rank = torch.arange(total) - class_start[labels[grouped]]
    return grouped[rank < torch.tensor(quota)[labels[grouped]]].sort().values


def _subset(x: Tensor, y: Tensor, size: int | None, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    if size is None or size >= y.numel():
        return x, y
    keep, _ = stratified_split(y, size, generator)
    return x[keep], y[keep]

# --------------------------------------------------------------------------------------------------
# Cache helpers (used by subclasses that decode image files)
# --------------------------------------------------------------------------------------------------

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


def _key_of(path: Path) -> str:
    return path.stem.rsplit("-", 1)[-1]  # batlit names entries <dataset>-<label>-<key>.npz


def load_cached(path: Path, key: str | None = None) -> LoadedData | None:
    """Decoded arrays saved by :func:`save_cached` (see :mod:`batlit.data.cache`); ``None`` if
    absent or invalid (truncated, another key or format: reported once, never used)."""
    from . import cache

    found = cache.load(Path(path), key or _key_of(Path(path)), _check_entry)
    return None if found is None else _to_loaded(*found)


def save_cached(path: Path, data: LoadedData, key: str | None = None) -> None:
    """Save decoded arrays as a verified entry, atomically, then evict down to the size cap."""
    from . import cache

    cache.save(Path(path), key or _key_of(Path(path)), *_from_loaded(data))


def cached(path: Path, key: str, build: Callable[[], LoadedData]) -> LoadedData:
    """The cache entry at ``path`` if valid for ``key``; else ``build()``, under the entry's lock
    (a concurrent process waits, then reads it), saved. Nothing is written when ``build`` raises."""
    from . import cache

    arrays, info = cache.get_or_build(Path(path), key, lambda: _from_loaded(build()), _check_entry)
    return _to_loaded(arrays, info)


# --------------------------------------------------------------------------------------------------
# The base DataModule
# --------------------------------------------------------------------------------------------------

def _check_int(key: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"data.{key} must be an integer >= {minimum}, got {value!r}")

def fits_on_device(nbytes: int, device: torch.device, share: float = 0.25) -> bool:
    """``data.on_device``'s size check: a split may take at most ``share`` of the GPU's free memory
    (the rest is for the model, the attack's activations and the other splits)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


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
        self._val_size = self._parse_val_size(val_size)

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

    # ---- validation ------------------------------------------------------------------------------

    @staticmethod
    def _parse_val_size(val_size: Any) -> tuple[str, float]:
        """Return ("fraction", f) or ("count", n) after validating ``val_size``."""
        if isinstance(val_size, bool) or not isinstance(val_size, (int, float, np.integer, np.floating)):
            raise ValueError(f"data.val_size must be a number, got {val_size!r}")
        if not math.isfinite(val_size) or val_size < 0:
            raise ValueError(f"data.val_size must be >= 0, got {val_size!r}")
        if val_size < 1:
            return ("fraction", float(val_size))
        if float(val_size) != int(val_size):
            raise ValueError(
                f"data.val_size must be a fraction in [0, 1) or a whole number of samples >= 1, got {val_size!r}"
            )
        return ("count", int(val_size))

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
        self._test_kept = None
        test_index = torch.arange(data.test_y.numel())
        data = self._select_classes(data)
        if self._test_kept is not None:
            test_index = test_index[self._test_kept]
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
        kind, amount = self._val_size
        n_val = math.ceil(amount * train_y.numel()) if kind == "fraction" else int(amount)
        if n_val >= train_y.numel():
            raise ValueError(
                f"data.val_size={self.val_size!r} asks for {n_val} validation samples but the training "
                f"set has only {train_y.numel()}"
            )
        if n_val > 0:
            val_idx, train_idx = stratified_split(train_y, n_val, _generator(self.seed, 1))
            val_x, val_y = train_x[val_idx], train_y[val_idx]
            train_x, train_y = train_x[train_idx], train_y[train_idx]
        train_x, train_y = _subset(train_x, train_y, self.train_subset, _generator(self.seed, 2))
        if self.test_subset_seed is None:
            keep = torch.arange(data.test_y.numel())
            if self.test_subset is not None and self.test_subset < data.test_y.numel():
                keep, _ = stratified_split(data.test_y.long(), self.test_subset, _generator(self.seed, 3))
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

    def _select_classes(self, data: LoadedData) -> LoadedData:
        """``data.classes`` / ``data.exclude_classes``: keep a subset of classes (by index or name),
        labels remapped to 0..K'-1 in the original order, class names kept (the paper's Table 4)."""
        if self.classes is None and self.exclude_classes is None:
            return data
        names = list(data.class_names)
        key = "data.classes" if self.classes is not None else "data.exclude_classes"
        picked = class_indices(self.classes if self.classes is not None else self.exclude_classes, names, key,
                               f" of {self.name}")
        kept = sorted(set(picked)) if self.classes is not None else [i for i in range(len(names)) if i not in picked]
        if len(kept) < 2:
            raise ValueError(f"{key}: {len(kept)} class(es) left; training needs at least 2")
        remap = torch.full((len(names),), -1, dtype=torch.long)
        remap[kept] = torch.arange(len(kept))

        def select(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            new = remap[y.long()]
            mask = new >= 0
            return x[mask], new[mask]

        self._test_kept = remap[data.test_y.long()] >= 0  # the kept test images' indices as loaded (test_index)

        return LoadedData.from_splits(select(data.train_x, data.train_y), select(data.test_x, data.test_y),
                                      [names[i] for i in kept])

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
                              num_workers=0, collate_fn=passthrough_collate, generator=_generator(self.seed, 3_000))
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler if shuffle else None,
            # its own generator: creating an iterator draws a worker base seed, which must not
            # shift the global stream that augmentation and attack starts use
            generator=_generator(self.seed, 3_000),
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
