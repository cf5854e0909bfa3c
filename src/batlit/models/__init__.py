"""Model zoo: every model takes images in [0, 1] and normalises them internally."""

from batlit.models.normalize import Normalize, use_channels_last
from batlit.models.preact_resnet import PreActResNet, preact_resnet18
from batlit.models.resnet import ResNet, resnet18
from batlit.models.small_cnn import SmallCNN, small_cnn
from batlit.models.wide_resnet import WideResNet, wrn28_10, wrn34_10

__all__ = [
    "Normalize",
    "use_channels_last",
    "PreActResNet",
    "ResNet",
    "SmallCNN",
    "WideResNet",
    "preact_resnet18",
    "resnet18",
    "small_cnn",
    "wrn28_10",
    "wrn34_10",
]
