"""Generated, learnable image data for fast tests and smoke runs (no files, no download)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ImageDataModule
from .datasets import LoadedData

__all__ = ["SyntheticDataModule"]

_PROTOTYPE_SEED = 0  # the task (class prototypes) is the same for every `seed`


class SyntheticDataModule(ImageDataModule):
    """Noisy copies of one fixed random prototype image per class; a small CNN learns it quickly.

    Prototypes are smooth (random 4x4 patterns upsampled to ``image_size``) so that small crops
    and flips keep a sample close to its class; they come from a generator with a fixed seed, so
    every ``seed`` poses the same task. ``seed`` draws the samples' noise, their order, the
    validation split and the subsets, so the data is deterministic for a given ``seed``.
    Classes are balanced; class names are ``class0``, ``class1``, ...

    Args:
        num_classes, in_channels, image_size: shape of the task.
        n_train, n_test: number of generated train and test samples.
        noise: standard deviation of the Gaussian noise added to the prototype (pixel units).
        crop_padding: ``None`` (default) means ``image_size // 8``.
        **kwargs: the :class:`~batlit.data.base.ImageDataModule` arguments.
    """

    dataset_name = "synthetic"

    def __init__(
        self,
        root: str = "data",
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        n_train: int = 512,
        n_test: int = 256,
        noise: float = 0.15,
        crop_padding: int | None = None,
        generated_classes: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(root=root, num_classes=num_classes, crop_padding=crop_padding, **kwargs)
        # how many classes are generated; num_classes is the count after data.classes / exclude_classes
        self.generated_classes = int(generated_classes if generated_classes is not None else num_classes)
        if self.generated_classes < 2:
            raise ValueError(f"data.generated_classes must be an integer >= 2, got {generated_classes!r}")
        for key, value in (("in_channels", in_channels), ("image_size", image_size), ("n_train", n_train), ("n_test", n_test)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{key} must be an integer >= 1, got {value!r}")
        if not noise >= 0:
            raise ValueError(f"data.noise must be >= 0, got {noise!r}")
        self.n_train, self.n_test, self.noise = n_train, n_test, float(noise)
        self._shape = (in_channels, image_size, image_size)

    def prototypes(self) -> torch.Tensor:
        """The class prototype images, float in [0, 1], shape (generated_classes, C, H, W)."""
        c, h, w = self._shape
        g = torch.Generator().manual_seed(_PROTOTYPE_SEED)
        coarse = torch.rand(self.generated_classes, c, 4, 4, generator=g)
        return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 1)

    def _sample(self, protos: torch.Tensor, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % self.generated_classes
        y = y[torch.randperm(n, generator=g)]
        x = protos[y] + self.noise * torch.randn((n, *self._shape), generator=g)
        return (x.clamp_(0, 1) * 255).round_().to(torch.uint8), y

    def _load(self) -> LoadedData:
        protos = self.prototypes()
        g = torch.Generator().manual_seed(self.seed)
        train_x, train_y = self._sample(protos, self.n_train, g)
        test_x, test_y = self._sample(protos, self.n_test, g)
        return LoadedData(train_x, train_y, test_x, test_y, [f"class{i}" for i in range(self.generated_classes)])
