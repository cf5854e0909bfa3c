"""ResNet-18, CIFAR variant (He et al. 2016, "Deep Residual Learning for Image Recognition").

3x3 stride-1 stem and no max-pool, as in the TRADES / FRL authors' code; global average
pooling is adaptive so larger inputs (e.g. Imagenette) also work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from batlit.models.fold import conv_bn, set_batchnorm_folding
from batlit.models.normalize import build_input_layer, check_int, use_channels_last


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def conv_bn_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [(self.conv1, self.bn1), (self.conv2, self.bn2)]
        return pairs + ([(self.shortcut[0], self.shortcut[1])] if len(self.shortcut) else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv2, self.bn2, out)
        shortcut = conv_bn(self.shortcut[0], self.shortcut[1], x) if len(self.shortcut) else x
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """CIFAR-style ResNet with BasicBlocks (He et al. 2016), as in the TRADES / FRL authors' code."""

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = build_input_layer(num_classes, in_channels, mean, std)
        width = check_int(width, "model.width", 1)
        self.num_classes = num_classes
        self.in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(width, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(2 * width, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(4 * width, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(8 * width, num_blocks[3], stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(8 * width * BasicBlock.expansion, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    def conv_bn_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.conv1, self.bn1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.normalize(x)
        out = F.relu(conv_bn(self.conv1, self.bn1, out))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.flatten(self.pool(out), 1)
        return self.linear(out)


def resnet18(
    num_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels_last: bool = False,
    fold_batchnorm: bool = True,
    **arch_kwargs,
) -> nn.Module:
    """ResNet-18 (CIFAR variant); ``width`` (default 64) scales all stage widths. ``fold_batchnorm``:
    the attacks run each BatchNorm folded into its convolution (batlit.models.fold)."""
    model = ResNet((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **arch_kwargs)
    return set_batchnorm_folding(use_channels_last(model, channels_last), fold_batchnorm)
