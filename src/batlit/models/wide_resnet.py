"""Wide ResNet (Zagoruyko & Komodakis 2016, "Wide Residual Networks"), as in the TRADES authors' code.

Differences from that code: the unused ``sub_block1`` is dropped (it never runs in forward and
only adds dead parameters) and the final pooling is adaptive so inputs larger than 32x32 work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from batlit.models.normalize import build_input_layer, check_int, use_channels_last


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal_in_out = in_planes == out_planes
        self.conv_shortcut: nn.Module | None = None
        if not self.equal_in_out:
            self.conv_shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        # As in the reference code: a projection shortcut sees the pre-activated input.
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(pre)
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return shortcut + self.conv2(out)


class WideResNet(nn.Module):
    """WRN-depth-widen_factor (Zagoruyko & Komodakis 2016), as in the TRADES / BAT authors' code."""

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        dropout: float = 0.0,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = build_input_layer(num_classes, in_channels, mean, std)
        depth = check_int(depth, "model.depth", 10)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"model.depth must satisfy (depth - 4) % 6 == 0, got {depth}")
        widen_factor = check_int(widen_factor, "model.widen_factor", 1)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = self._make_group(n, channels[0], channels[1], 1, float(dropout))
        self.block2 = self._make_group(n, channels[1], channels[2], 2, float(dropout))
        self.block3 = self._make_group(n, channels[2], channels[3], 2, float(dropout))
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[3], num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    @staticmethod
    def _make_group(n: int, in_planes: int, out_planes: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = F.relu(self.bn1(out))
        out = torch.flatten(self.pool(out), 1)
        return self.fc(out)


def wrn28_10(
    num_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels_last: bool = False,
    **arch_kwargs,
) -> nn.Module:
    """WRN-28-10; ``dropout`` (default 0.0) is the only architecture kwarg."""
    model = WideResNet(28, 10, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **arch_kwargs)
    return use_channels_last(model, channels_last)


def wrn34_10(
    num_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels_last: bool = False,
    **arch_kwargs,
) -> nn.Module:
    """WRN-34-10, the TRADES / BAT CIFAR backbone; ``dropout`` (default 0.0) is the only architecture kwarg."""
    model = WideResNet(34, 10, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **arch_kwargs)
    return use_channels_last(model, channels_last)
