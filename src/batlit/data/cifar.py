"""CIFAR-10 and CIFAR-100 through torchvision, held in memory as uint8 tensors."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torchvision import datasets
from torchvision.datasets.utils import download_and_extract_archive

from .base import DataUnavailableError, ImageDataModule
from .datasets import LoadedData

__all__ = ["CIFAR10DataModule", "CIFAR100DataModule", "try_download"]


def try_download(fetch, describe_missing: str) -> None:
    """Run ``fetch()`` with a 10 s socket timeout; turn any failure into DataUnavailableError.

    ``describe_missing`` is a format string with ``{reason}``; it must already name the path and
    say how to obtain the files. Without internet this fails within seconds instead of hanging.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        fetch()
    except Exception as err:  # any network/OS/integrity failure means "not available"
        reason = f"{type(err).__name__}: {err}".replace("\n", " ").strip()
        raise DataUnavailableError(describe_missing.format(reason=reason)) from err
    finally:
        socket.setdefaulttimeout(previous)


class _CIFARDataModule(ImageDataModule):
    """Common code of CIFAR-10/100: torchvision's python-pickle release under ``root``."""

    _dataset_cls: type[datasets.CIFAR10] = datasets.CIFAR10
    _title = "CIFAR-10"

    def _files(self) -> list[Path]:
        cls = self._dataset_cls
        folder = Path(self.root).expanduser() / cls.base_folder
        names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [folder / n for n in names]

    def _ensure_files(self) -> None:
        if all(f.is_file() for f in self._files()):
            return
        cls = self._dataset_cls
        root = os.path.abspath(os.path.expanduser(self.root))
        how = (
            f"place {cls.base_folder} (https://www.cs.toronto.edu/~kriz/cifar.html) in that folder, "
            f"or use data=image_folder."
        )
        if not self.download:
            raise DataUnavailableError(
                f"{self._title} not found under '{root}' and data.download=false. "
                f"With internet, set data.download=true; otherwise {how}"
            )
        try_download(
            lambda: download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5),
            f"{self._title} not found under '{root}' and could not be downloaded ({{reason}}). "
            f"With internet, keep data.download=true; otherwise {how}",
        )

    def _load(self) -> LoadedData:
        self._ensure_files()
        root = os.path.expanduser(self.root)
        train = self._dataset_cls(root, train=True, download=False)
        test = self._dataset_cls(root, train=False, download=False)
        # torchvision stores HWC uint8 numpy; the base wants NCHW tensors.
        return LoadedData(
            train_x=torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous(),
            train_y=torch.as_tensor(train.targets, dtype=torch.long),
            test_x=torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous(),
            test_y=torch.as_tensor(test.targets, dtype=torch.long),
            class_names=list(train.classes),
        )


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10 (50k train / 10k test, 32x32 RGB, 10 classes), downloaded by torchvision."""

    _dataset_cls = datasets.CIFAR10
    _title = "CIFAR-10"
    dataset_name = "cifar10"


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (50k train / 10k test, 32x32 RGB, 100 fine classes), downloaded by torchvision."""

    _dataset_cls = datasets.CIFAR100
    _title = "CIFAR-100"
    dataset_name = "cifar100"
