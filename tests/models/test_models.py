"""Tests for batlit.models: shapes, input normalisation, validation, memory format, Hydra configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from batlit.models import (
    Normalize,
    PreActResNet,
    ResNet,
    SmallCNN,
    WideResNet,
    preact_resnet18,
    resnet18,
    small_cnn,
    wrn28_10,
    wrn34_10,
)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)

FACTORIES = {
    "resnet18": resnet18,
    "preact_resnet18": preact_resnet18,
    "wrn28_10": wrn28_10,
    "wrn34_10": wrn34_10,
    "small_cnn": small_cnn,
}
CLASSES = {
    "resnet18": ResNet,
    "preact_resnet18": PreActResNet,
    "wrn28_10": WideResNet,
    "wrn34_10": WideResNet,
    "small_cnn": SmallCNN,
}
WIDE = {"wrn28_10", "wrn34_10"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_output_shape_cifar(name, num_classes):
    model = FACTORIES[name](num_classes=num_classes, mean=CIFAR_MEAN, std=CIFAR_STD)
    assert isinstance(model, CLASSES[name])
    assert model.num_classes == num_classes
    # The wide nets are ~40M params; eval mode and batch 1 keep the test fast.
    batch = 1 if name in WIDE else 2
    if name in WIDE:
        model.eval()
    with torch.no_grad():
        out = model(torch.rand(batch, 3, 32, 32))
    assert out.shape == (batch, num_classes)
    assert torch.isfinite(out).all()


def test_small_cnn_on_8x8_grayscale():
    model = small_cnn(num_classes=10, in_channels=1, mean=[0.5], std=[0.25])
    out = model(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 10)
    out.sum().backward()  # trains end to end on tiny inputs
    assert sum(p.numel() for p in model.parameters()) < 300_000


def test_resnet18_on_64px():
    model = resnet18(num_classes=10, width=16)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_width_kwarg_shrinks_resnet18():
    narrow = resnet18(width=16)
    full = resnet18()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(narrow) < count(full) / 10
    assert narrow.conv1.out_channels == 16 and narrow.linear.in_features == 128


def test_normalize_matches_hand_computation():
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    norm = Normalize(mean, std)
    assert norm.mean.shape == (1, 3, 1, 1) and norm.std.shape == (1, 3, 1, 1)
    x = torch.rand(2, 3, 4, 5)
    expected = torch.empty_like(x)
    for c in range(3):
        expected[:, c] = (x[:, c] - mean[c]) / std[c]
    torch.testing.assert_close(norm(x), expected)
    # Buffers follow the module, so they are saved in checkpoints.
    assert set(norm.state_dict()) == {"mean", "std"}


def test_normalize_identity_when_none():
    norm = Normalize(None, None)
    x = torch.rand(2, 3, 4, 4)
    assert norm(x) is x
    assert resnet18(width=8).normalize.mean is None


def test_normalize_accepts_listconfig():
    cfg = OmegaConf.create({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    norm = Normalize(cfg.mean, cfg.std)
    torch.testing.assert_close(norm(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"num_classes": 1}, "model.num_classes"),
        ({"in_channels": 0}, "model.in_channels"),
        ({"mean": [0.5, 0.5], "std": [0.5, 0.5]}, "model.mean"),
        ({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5]}, "model.std"),
        ({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.0, 0.5]}, "model.std"),
    ],
)
def test_bad_arguments_raise_naming_key(name, kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        FACTORIES[name](**kwargs)


def test_num_classes_message_format():
    with pytest.raises(ValueError, match=r"^model\.num_classes must be >= 2, got 1$"):
        resnet18(num_classes=1)


def test_bad_arch_kwargs():
    with pytest.raises(ValueError, match=r"model\.width"):
        small_cnn(width=0)
    with pytest.raises(ValueError, match=r"model\.depth"):
        WideResNet(depth=30, widen_factor=1)


def test_channels_last_matches_contiguous():
    model = resnet18(num_classes=10, width=16, mean=CIFAR_MEAN, std=CIFAR_STD).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out_input_cl = model(x.to(memory_format=torch.channels_last))
        model_cl = model.to(memory_format=torch.channels_last)
        out_both_cl = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out_input_cl, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_both_cl, ref, rtol=1e-4, atol=1e-5)


def test_input_gradient_flows():
    # Attacks need d(loss)/d(input) through the normalisation layer.
    model = small_cnn(mean=CIFAR_MEAN, std=CIFAR_STD).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(FACTORIES))
def test_yaml_configs_instantiate(name):
    model_cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    cfg = OmegaConf.merge(
        {
            "data": {
                "num_classes": 100,
                "in_channels": 3,
                "mean": list(CIFAR_MEAN),
                "std": list(CIFAR_STD),
            },
            "model": model_cfg,
        }
    )
    model = instantiate(cfg.model)
    assert isinstance(model, CLASSES[name])
    assert model.num_classes == 100
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.tensor(CIFAR_MEAN))
    if name not in WIDE:
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_yaml_null_mean_std_gives_identity():
    cfg = OmegaConf.merge(
        {"data": {"num_classes": 10, "in_channels": 1, "mean": None, "std": None}},
        {"model": OmegaConf.load(CONF_DIR / "small_cnn.yaml")},
    )
    model = instantiate(cfg.model)
    assert model.normalize.mean is None
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
