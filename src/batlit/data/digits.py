"""scikit-learn's bundled 8x8 handwritten digits: a real dataset that needs no download."""

from __future__ import annotations

import numpy as np
import torch

from .base import ImageDataModule
from .datasets import LoadedData
from .splits import stratified_split

__all__ = ["DigitsDataModule"]

_TEST_FRACTION = 0.25
_SPLIT_SEED = 0  # the train/test split is part of the dataset's definition, not of `seed`


class DigitsDataModule(ImageDataModule):
    """1797 grayscale 8x8 digits (``sklearn.datasets.load_digits``), for CPU-sized real-data runs.

    Pixel values 0..16 are scaled to uint8 0..255. The train/test split is fixed (25% test,
    stratified, split seed 0 whatever ``seed`` is); ``seed`` still drives the validation split
    and subsets. Augmentation is off by default: crops and flips change what a digit is.
    """

    dataset_name = "digits"

    def __init__(self, root: str = "data", augment: bool = False, **kwargs) -> None:
        super().__init__(root=root, augment=augment, **kwargs)

    def _load(self) -> LoadedData:
        from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

        digits = load_digits()
        x = torch.from_numpy(np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
        y = torch.from_numpy(digits.target.astype(np.int64))
        n_test = int(np.ceil(_TEST_FRACTION * len(y)))
        test_idx, train_idx = stratified_split(y, n_test, torch.Generator().manual_seed(_SPLIT_SEED))
        return LoadedData(
            train_x=x[train_idx],
            train_y=y[train_idx],
            test_x=x[test_idx],
            test_y=y[test_idx],
            class_names=[str(d) for d in range(10)],
        )
