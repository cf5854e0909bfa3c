"""Seeded splits of a dataset: the validation split, the training and test subsets, class selection.

Everything here is a function of the labels and the data settings alone, so a run's split can be
recomputed without its DataModule: :meth:`ImageDataModule.setup <batlit.data.base.ImageDataModule.setup>`
draws its splits with :func:`split_indices`, and a fine-tuning run (``method.init_ckpt``) calls it
again with its hot start's settings to check that its validation images were not trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .datasets import LoadedData

__all__ = [
    "SubsetTooLargeError",
    "balanced_subset",
    "class_indices",
    "parse_val_size",
    "select_classes",
    "split_generator",
    "split_indices",
    "stratified_split",
    "val_count",
]


def split_generator(seed: int, salt: int) -> torch.Generator:
    """The generator of one split, from ``data.seed`` and the split's ``salt`` (1: validation split,
    2: training subset, 3: test subset, 1_000 + epoch: the epoch's order, 3_000: the loaders)."""
    # Independent streams for the val split and each subset, so e.g. changing test_subset does not
    # change which training images are kept.
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + salt) % (2**63))


def parse_val_size(val_size: Any) -> tuple[str, float]:
    """Return ("fraction", f) or ("count", n) after validating ``data.val_size``."""
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


def val_count(val_size: Any, n: int) -> int:
    """How many of ``n`` training samples ``data.val_size`` holds out (a fraction rounds up)."""
    kind, amount = parse_val_size(val_size)
    return math.ceil(amount * n) if kind == "fraction" else int(amount)


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


def split_indices(labels: Tensor, val_size: float | int, seed: int,
                  train_subset: int | None = None) -> tuple[Tensor, Tensor]:
    """(validation, training) indices into the full training set whose labels are ``labels``, for
    these data settings: the stratified validation split (salt 1), then the stratified training
    subset (salt 2) of what is left. Both are sorted ascending; without a split or a subset the
    training indices are ``arange(len(labels))``. tests/fidelity/test_recipes.py checks that setup's
    images are these."""
    n = labels.numel()
    n_val = val_count(val_size, n)
    val_idx, train_idx = torch.zeros(0, dtype=torch.long), torch.arange(n)
    if n_val > 0:
        val_idx, train_idx = stratified_split(labels, n_val, split_generator(seed, 1))
    if train_subset is not None and train_subset < train_idx.numel():
        keep, _ = stratified_split(labels[train_idx], int(train_subset), split_generator(seed, 2))
        train_idx = train_idx[keep]
    return val_idx, train_idx


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


def select_classes(data: LoadedData, classes: Sequence[int | str] | None,
                   exclude_classes: Sequence[int | str] | None, where: str = "") -> tuple[LoadedData, Tensor | None]:
    """``data.classes`` / ``data.exclude_classes``: keep a subset of classes (by index or name),
    labels remapped to 0..K'-1 in the original order, class names kept (the paper's Table 4).

    Returns the selected data and the mask of the kept test images as loaded (``None``, with
    ``data`` itself, when neither key is set).
    """
    if classes is None and exclude_classes is None:
        return data, None
    names = list(data.class_names)
    key = "data.classes" if classes is not None else "data.exclude_classes"
    picked = class_indices(classes if classes is not None else exclude_classes, names, key, where)
    kept = sorted(set(picked)) if classes is not None else [i for i in range(len(names)) if i not in picked]
    if len(kept) < 2:
        raise ValueError(f"{key}: {len(kept)} class(es) left; training needs at least 2")
    remap = torch.full((len(names),), -1, dtype=torch.long)
    remap[kept] = torch.arange(len(kept))

    def select(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        new = remap[y.long()]
        mask = new >= 0
        return x[mask], new[mask]

    test_kept = remap[data.test_y.long()] >= 0  # the kept test images' indices as loaded (test_index)
    return type(data).from_splits(select(data.train_x, data.train_y), select(data.test_x, data.test_y),
                                  [names[i] for i in kept]), test_kept
