"""Pre-activation ResNet-18, CIFAR variant (He et al. 2016, "Identity Mappings in Deep Residual Networks").

Includes the final BN-ReLU before pooling, as in the Rice et al. (2020) robust-overfitting code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from batlit.models.normalize import build_input_layer, check_int, use_channels_last


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # A projection shortcut takes the pre-activated input; the identity one takes x itself.
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet (He et al. 2016b), CIFAR variant with a 3x3 stride-1 stem."""

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
        self.layer1 = self._make_layer(width, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(2 * width, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(4 * width, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(8 * width, num_blocks[3], stride=2)
        self.bn = nn.BatchNorm2d(8 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(8 * width * PreActBlock.expansion, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes * PreActBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = torch.flatten(self.pool(out), 1)
        return self.linear(out)


def preact_resnet18(
    num_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels_last: bool = False,
    **arch_kwargs,
) -> nn.Module:
    """PreAct ResNet-18 (CIFAR variant); ``width`` (default 64) scales all stage widths."""
    model = PreActResNet(
        (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **arch_kwargs
    )
    return use_channels_last(model, channels_last)
