"""Imagenette (10 easy ImageNet classes) through torchvision, decoded once and cached as uint8."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision import datasets

from .base import DataUnavailableError, ImageDataModule
from .cache_entries import cache_key, cached, default_cache_dir
from .datasets import LoadedData
from .cifar import try_download
from .image_folder import _split_from_dir, decode_images

__all__ = ["ImagenetteDataModule"]

_CACHE_VERSION = 1
_VARIANTS = ("full", "320px", "160px")


class ImagenetteDataModule(ImageDataModule):
    """Imagenette (the BAT paper's "ImageNet" rows): ~9.5k train / 3.9k val images, 10 classes.

    torchvision downloads the ``size_variant`` archive into ``root``. Every image is decoded once,
    its shorter side resized to ``image_size`` and centre-cropped to a square, and the uint8 arrays
    are cached in ``cache_dir`` (default ``$XDG_CACHE_HOME/batlit`` or ``~/.cache/batlit``).
    The official ``val`` split serves as the test split.

    Args:
        image_size: side of the square images (default 160).
        size_variant: which archive to use: "full", "320px" or "160px" (default).
        cache_dir: where decoded arrays are cached (see :mod:`batlit.data.cache` for its size cap).
        crop_padding: ``None`` (default) means ``image_size // 8``.
        **kwargs: the :class:`~batlit.data.base.ImageDataModule` arguments.
    """

    dataset_name = "imagenette"
    _load_in_prepare_data = True

    def __init__(
        self,
        root: str = "data",
        image_size: int = 160,
        size_variant: str = "160px",
        cache_dir: str | None = None,
        crop_padding: int | None = None,
        **kwargs,
    ) -> None:
        if crop_padding is None and isinstance(image_size, int):
            crop_padding = image_size // 8
        super().__init__(root=root, crop_padding=crop_padding, **kwargs)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"data.image_size must be an integer >= 1, got {image_size!r}")
        if size_variant not in _VARIANTS:
            raise ValueError(f"data.size_variant must be one of {list(_VARIANTS)}, got {size_variant!r}")
        self.requested_image_size = image_size
        self.size_variant = size_variant
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    def _root(self) -> str:
        return os.path.abspath(os.path.expanduser(self.root))

    def _extracted(self) -> Path:
        url, _ = datasets.Imagenette._ARCHIVES[self.size_variant]
        return Path(self._root()) / Path(url).stem  # e.g. <root>/imagenette2-160

    def _ensure_files(self) -> None:
        folder = self._extracted()
        if (folder / "train").is_dir() and (folder / "val").is_dir():
            return
        root = self._root()
        archive = Path(datasets.Imagenette._ARCHIVES[self.size_variant][0]).name
        how = (
            f"extract {archive} (https://github.com/fastai/imagenette) in that folder, "
            f"or use data=image_folder."
        )
        if not self.download:
            raise DataUnavailableError(
                f"Imagenette ({self.size_variant}) not found under '{root}' and data.download=false. "
                f"With internet, set data.download=true; otherwise {how}"
            )
        try_download(
            lambda: datasets.Imagenette(root, split="train", size=self.size_variant, download=True),
            f"Imagenette ({self.size_variant}) not found under '{root}' and could not be downloaded "
            f"({{reason}}). With internet, keep data.download=true; otherwise {how}",
        )

    def _load(self) -> LoadedData:
        self._ensure_files()
        root = self._root()
        for split in ("train", "val"):  # torchvision's listing follows symlinks without end: refuse loops first
            _split_from_dir(self._extracted() / split)
        splits = {s: datasets.Imagenette(root, split=s, size=self.size_variant) for s in ("train", "val")}
        class_names = [names[0] for names in splits["train"].classes]
        samples = {s: list(ds._samples) for s, ds in splits.items()}

        stats = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for s in samples.values() for p, _ in s]
        key = cache_key(
            {
                "version": _CACHE_VERSION,
                "root": root,
                "variant": self.size_variant,
                "image_size": self.requested_image_size,
                "files": stats,
            }
        )
        path = self.cache_dir / f"imagenette-{self.size_variant}-{self.requested_image_size}-{key}.npz"

        def decode() -> LoadedData:
            arrays = {}
            for split, items in samples.items():
                x = decode_images(None, [p for p, _ in items], "RGB", self.requested_image_size, resize="shorter")
                arrays[split] = (torch.from_numpy(x), torch.tensor([y for _, y in items], dtype=torch.long))
            return LoadedData.from_splits(arrays["train"], arrays["val"], class_names)

        return cached(path, key, decode)
