"""Plumbing shared by every attack loop: eval mode, argument checks, the L∞ projection."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run an attack with the model in eval mode (docs/design.md §3), restoring every submodule's flag."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def check_threat_model(eps: float, step_size: float, steps: int, prefix: str = "attack") -> None:
    """Reject a threat model no attack can run with, naming the key."""
    if not eps >= 0:
        raise ValueError(f"{prefix}.eps must be >= 0, got {eps}")
    if not step_size > 0:
        raise ValueError(f"{prefix}.step_size must be > 0, got {step_size}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"{prefix}.steps must be an integer >= 1, got {steps}")


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Π onto B∞(x, ε) ∩ [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def random_start(
    x: Tensor, eps: float, init: str, init_std: float, generator: torch.Generator | None
) -> Tensor:
    """x_0: uniform in the ε-ball (Madry), x + init_std·N(0, I) (TRADES/BAT), or x itself."""
    if init == "uniform":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x0 = x + (2 * noise - 1) * eps
    elif init == "normal":
        x0 = x + init_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    elif init == "none":
        x0 = x.clone()
    else:
        raise ValueError(f"attack.init must be one of uniform, normal, none; got {init!r}")
    return project(x0, x, eps)


def input_gradient(loss: Tensor, x: Tensor) -> Tensor:
    """∇_x loss only: no weight gradients are computed or accumulated."""
    (grad,) = torch.autograd.grad(loss, x)
    return grad
