"""Data pieces at their edges: crop offsets, the epoch order, the cache's cap
(gaps found by scripts/mutants.py, docs/testing.md)."""

from __future__ import annotations

import os
import time

import torch

from batlit.data import SyntheticDataModule
from batlit.data.base import EpochRandomSampler, TensorImageDataset
from batlit.data.cache import evict


def test_the_crop_takes_every_offset_from_zero_to_twice_the_padding():
    torch.manual_seed(0)
    dm = SyntheticDataModule(crop_padding=2)
    n, h, w, pad = 300, 5, 5, 2
    x = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w).repeat(n, 1, 1, 1)  # 0 is padding
    out = dm.augment(x)
    offsets = set()
    for img in out[:, 0]:
        r, c = (int(v) for v in (img > 0).nonzero()[0])         # a visible pixel and its right neighbour
        v, right = int(img[r, c]) - 1, int(img[r, c + 1]) - 1   # (a crop shows at least 3 columns)
        i, j = divmod(v, w)
        flipped = right == v - 1
        # unflipped: c = j + pad - ox; flipped, columns are read right to left: ox = j + pad - (w - 1 - c)
        offsets.add((i + pad - r, j + pad - (w - 1 - c) if flipped else j + pad - c))
    assert offsets == {(oy, ox) for oy in range(2 * pad + 1) for ox in range(2 * pad + 1)}


def test_each_epoch_has_its_own_order_and_an_epoch_repeats_its_order():
    data = TensorImageDataset(torch.zeros(50, 1, 1, 1, dtype=torch.uint8), torch.zeros(50, dtype=torch.long))
    sampler = EpochRandomSampler(data, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first and second != first and sorted(second) == list(range(50))


def test_eviction_keeps_a_cache_exactly_at_its_cap(tmp_path):
    for i, size in enumerate((100, 200)):
        path = tmp_path / f"synthetic-x-{i:020x}.npz"
        path.write_bytes(b"\0" * size)
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
    assert evict(tmp_path, cap=300) == []
    removed = evict(tmp_path, cap=299)
    assert [e.path.name for e in removed] == [f"synthetic-x-{0:020x}.npz"]  # the least recently used


def test_a_fractional_val_size_rounds_up_in_the_datamodule_and_in_the_hot_start_check():
    from batlit.data.splits import split_indices

    dm = SyntheticDataModule(image_size=4, n_train=95, n_test=10, val_size=0.1, seed=2)
    dm.setup()
    assert len(dm.val_y) == 10 and len(dm.train_y) == 85  # ceil(9.5)
    full = dm._load()
    val_idx, train_idx = split_indices(full.train_y, 0.1, 2)
    assert torch.equal(full.train_x[val_idx], dm.val_x) and torch.equal(full.train_x[train_idx], dm.train_x)
