"""In-memory data: the loaded arrays, the map-style dataset over them, its samplers and collation.

Batches are gathered with one indexing op (``__getitems__``) instead of one small tensor per sample;
with ``data.on_device`` the split lives on the GPU and each epoch's order is uploaded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, Dataset, RandomSampler

from .splits import split_generator

__all__ = [
    "DeviceBatch",
    "DeviceBatchSampler",
    "EpochRandomSampler",
    "LoadedData",
    "TensorImageDataset",
    "fits_on_device",
    "passthrough_collate",
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
        self.generator = split_generator(self.seed, 1_000 + int(epoch))


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


def fits_on_device(nbytes: int, device: torch.device, share: float = 0.25) -> bool:
    """``data.on_device``'s size check: a split may take at most ``share`` of the GPU's free memory
    (the rest is for the model, the attack's activations and the other splits)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free
