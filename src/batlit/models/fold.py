"""BatchNorm folded into the convolution before it, for the attacks' eval-mode passes.

In eval mode a BatchNorm is a fixed per-channel affine map of its input, so after a convolution

    bn(conv(x)) = γ·(W∗x + c − μ)/√(σ² + ε) + β = (s·W)∗x + (β + s·(c − μ)),   s = γ/√(σ² + ε):

one convolution with folded weights instead of a convolution and a BatchNorm, forward and
backward. An attack's passes all run in eval mode on fixed weights (it takes gradients for the
input only), so the folded weights are computed once per attack call and dropped when it returns;
training-mode passes, which normalise by the batch's own statistics, never see them. The same holds
for a whole evaluation (``batlit.evaluate``: the model in eval mode, PGD or AutoAttack). The result
is the same function up to float rounding (tests/models/test_fold.py); docs/performance.md measures the gain.

A model opts in by giving the modules that own such pairs a ``conv_bn_pairs()`` method and calling
:func:`conv_bn` in their forward (SmallCNN, ResNet). Pre-activation models (PreAct ResNet,
WideResNet) put BatchNorm before the convolution, with a ReLU between: nothing to fold there.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

_FOLDED = "_batlit_folded"  # attribute of the BatchNorm holding the folded (weight, bias) while folded


def conv_bn(conv: nn.Conv2d, bn: nn.Module, x: Tensor) -> Tensor:
    """``bn(conv(x))``, as one convolution while :func:`folded_batchnorm` holds the pair folded."""
    folded = bn.__dict__.get(_FOLDED)
    if folded is None or bn.training:  # a caller switching to train mode inside gets batch statistics
        return bn(conv(x))
    return conv._conv_forward(x, *folded)


def set_batchnorm_folding(model: nn.Module, enabled: bool) -> nn.Module:
    """``model.fold_batchnorm``: whether :func:`folded_batchnorm` folds this model's pairs."""
    if not isinstance(enabled, bool):
        raise ValueError(f"model.fold_batchnorm must be true or false, got {enabled!r}")
    for module in model.modules():
        if callable(getattr(module, "conv_bn_pairs", None)):
            module.fold_batchnorm = enabled
    return model


def _foldable(bn: nn.Module) -> bool:
    return (isinstance(bn, _BatchNorm) and not bn.training and bn.running_mean is not None
            and bn.running_var is not None and _FOLDED not in bn.__dict__)


def _fold(conv: nn.Conv2d, bn: _BatchNorm) -> tuple[Tensor, Tensor]:
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
    bias = shift * scale if bn.bias is None else bn.bias + shift * scale
    # the elementwise product keeps the weight's memory format (channels_last stays channels_last)
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.ndim - 1)))
    return weight, bias


@contextmanager
def folded_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: every declared (conv, BatchNorm) pair in eval mode runs as one folded convolution.

    Pairs whose BatchNorm is in training mode, keeps no running statistics or is already folded
    (a nested call) are left as they are; on exit exactly the pairs folded here are restored."""
    pairs = []
    for module in model.modules():
        declare = getattr(module, "conv_bn_pairs", None)
        if callable(declare) and getattr(module, "fold_batchnorm", True):
            pairs.extend((conv, bn) for conv, bn in declare() if _foldable(bn))
    try:
        with torch.no_grad():
            for conv, bn in pairs:
                bn.__dict__[_FOLDED] = _fold(conv, bn)
        yield model
    finally:
        for _, bn in pairs:
            bn.__dict__.pop(_FOLDED, None)
