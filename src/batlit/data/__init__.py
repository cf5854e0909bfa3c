"""LightningDataModules: in-memory uint8 datasets, batches ``(x, y)`` with x float32 in [0, 1].

See :class:`ImageDataModule` for the shared arguments (splits, subsets, loaders, augmentation).
"""

from .base import DataUnavailableError, ImageDataModule, LoadedData, TensorImageDataset
from .cifar import CIFAR10DataModule, CIFAR100DataModule
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule
from .imagenette import ImagenetteDataModule
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
    "SyntheticDataModule",
    "TensorImageDataset",
]
