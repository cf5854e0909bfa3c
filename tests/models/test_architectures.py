"""The architectures against their papers' block equations and sizes (gaps found by scripts/mutants.py,
docs/testing.md): a mistake inside a block changes neither output shapes nor parameter names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from batlit.models import preact_resnet18, resnet18, wrn28_10, wrn34_10
from batlit.models.preact_resnet import PreActBlock
from batlit.models.resnet import BasicBlock
from batlit.models.wide_resnet import WideBasicBlock


@pytest.mark.parametrize("factory,count", [(resnet18, 11_173_962), (preact_resnet18, 11_172_170),
                                           (wrn28_10, 36_479_194), (wrn34_10, 46_160_474)])
def test_parameter_counts_are_the_reference_architectures(factory, count):
    with torch.device("meta"):
        model = factory()
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("factory", [resnet18, preact_resnet18])
def test_resnet_stages_halve_the_resolution(factory):
    model = factory(width=4).eval()
    sizes = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        getattr(model, name).register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    assert sizes == [(4, 32, 32), (8, 16, 16), (16, 8, 8), (32, 4, 4)]


def _eval(block):
    torch.manual_seed(0)
    for m in block.modules():  # non-trivial BatchNorm statistics, so each normalisation shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return block.eval()


@pytest.mark.parametrize("stride,cin", [(1, 4), (2, 4)])
def test_resnet_block_is_relu_of_the_residual_sum(stride, cin):
    b = _eval(BasicBlock(cin, 8 if stride == 2 else 4, stride))
    x = torch.randn(2, cin, 8, 8)
    with torch.no_grad():
        out = b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x)))))
        torch.testing.assert_close(b(x), F.relu(out + b.shortcut(x)))


def test_preact_block_projects_the_preactivated_input():
    b = _eval(PreActBlock(4, 8, 2))
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        pre = F.relu(b.bn1(x))
        expected = b.conv2(F.relu(b.bn2(b.conv1(pre)))) + b.shortcut(pre)
        torch.testing.assert_close(b(x), expected)


def test_wide_block_projects_the_preactivated_input():
    b = _eval(WideBasicBlock(4, 8, 2))
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        pre = F.relu(b.bn1(x))
        expected = b.conv2(F.relu(b.bn2(b.conv1(pre)))) + b.conv_shortcut(pre)
        torch.testing.assert_close(b(x), expected)
