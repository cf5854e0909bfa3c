"""A small, fast CNN for CPU studies (batlit's own design, not from a paper).

Works on any input of at least 2x2 pixels, e.g. 8x8 grayscale digits or 32x32 RGB images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from batlit.models.fold import conv_bn, set_batchnorm_folding
from batlit.models.normalize import build_input_layer, check_int, use_channels_last


class AdaptiveAvgPool2x2(nn.Module):
    """``nn.AdaptiveAvgPool2d(2)`` with a deterministic CUDA backward (adaptive pooling's has none,
    so ``trainer.deterministic=true`` stopped on a GPU): the same windows and values.

    Even sizes (every 32x32, 16x16 and 8x8 input) have four equal, disjoint windows: a plain
    ``avg_pool2d``, which also keeps a channels_last gradient channels_last. Odd sizes have
    overlapping windows: two small averaging matrices, whose backward is a matmul. No parameters:
    the state dict, and so every checkpoint, is unchanged."""

    size = 2

    @staticmethod
    def _windows(n: int, out: int, like: torch.Tensor) -> torch.Tensor:
        """(out, n): row i averages PyTorch's adaptive window [floor(i·n/out), ceil((i+1)·n/out))."""
        i = torch.arange(out, device=like.device)
        start, end = (i * n) // out, -((-(i + 1) * n) // out)
        cols = torch.arange(n, device=like.device)
        inside = (cols >= start[:, None]) & (cols < end[:, None])
        return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.size == 0 and w % self.size == 0:
            return F.avg_pool2d(x, (h // self.size, w // self.size))
        rows = self._windows(x.shape[-2], self.size, x)
        cols = self._windows(x.shape[-1], self.size, x)
        return torch.einsum("ih,nchw,jw->ncij", rows, x, cols)


class ConvBNReLU(nn.Sequential):
    """conv 3x3 - BatchNorm - ReLU; a Sequential, so its parameter names are those of one."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    def conv_bn_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self[0], self[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[2](conv_bn(self[0], self[1], x))


class SmallCNN(nn.Module):
    """conv(w)-conv(2w)-maxpool-conv(4w), adaptive avg-pool to 2x2, MLP head; ~0.16M params at width 32."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = build_input_layer(num_classes, in_channels, mean, std)
        w = check_int(width, "model.width", 1)
        self.num_classes = num_classes
        self.features = nn.Sequential(
            ConvBNReLU(in_channels, w),
            ConvBNReLU(w, 2 * w),
            # ceil_mode keeps odd sizes (and 1-pixel-wide inputs) valid.
            nn.MaxPool2d(2, ceil_mode=True),
            ConvBNReLU(2 * w, 4 * w),
            # 2x2 rather than 1x1 keeps some spatial layout, which matters on tiny digit images.
            AdaptiveAvgPool2x2(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * w * 4, 4 * w),
            nn.ReLU(),
            nn.Linear(4 * w, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


def small_cnn(
    num_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels_last: bool = False,
    fold_batchnorm: bool = True,
    **arch_kwargs,
) -> nn.Module:
    """SmallCNN; ``width`` (default 32) is the first conv's channel count. ``fold_batchnorm``: the
    attacks run each BatchNorm folded into its convolution (batlit.models.fold)."""
    model = SmallCNN(num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **arch_kwargs)
    return set_batchnorm_folding(use_channels_last(model, channels_last), fold_batchnorm)
