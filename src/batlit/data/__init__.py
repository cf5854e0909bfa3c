"""LightningDataModules: in-memory uint8 datasets, batches ``(x, y)`` with x float32 in [0, 1].

See :class:`ImageDataModule` for the shared arguments (splits, subsets, loaders, augmentation).
Modules by concern: ``base`` (the ImageDataModule), ``splits`` (the seeded validation split, subsets and
class selection, public so that a run's split can be recomputed), ``datasets`` (in-memory dataset,
samplers, collation), ``cache``/``cache_entries`` (the decoded-data cache; ``python -m batlit.data``
is its command line), and one module per dataset.
"""

from .base import DataUnavailableError, ImageDataModule
from .cifar import CIFAR10DataModule, CIFAR100DataModule
from .datasets import LoadedData, TensorImageDataset
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule
from .imagenette import ImagenetteDataModule
from .splits import SubsetTooLargeError, balanced_subset, split_indices, stratified_split
from .synthetic import SyntheticDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DataUnavailableError",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImagenetteDataModule",
    "LoadedData",
    "SubsetTooLargeError",
    "SyntheticDataModule",
    "TensorImageDataset",
    "balanced_subset",
    "split_indices",
    "stratified_split",
]
