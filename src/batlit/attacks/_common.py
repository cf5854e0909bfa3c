"""Plumbing shared by every attack loop: eval mode, precision, argument checks, the L∞ projection."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import torch
from torch import Tensor, nn

# Every attack's ``precision`` (docs/performance.md, "Precision of the attacks"):
#   auto        fp32_first for a KL attack started near x (:func:`kl_near_x`), else inherit;
#   fp32_first  the clean target f(x) and the first step in fp32, later steps as inherit;
#   fp32        every step without autocast (on a GPU without TF32 either);
#   bf16        every step under bf16 autocast on the input's device;
#   inherit     whatever autocast surrounds the call (Lightning's, from trainer.precision) and
#               torch's TF32 setting.
# Named in batlit.vocab, a leaf without torch, so that the harness's validate() needs none.
from ..models.fold import folded_batchnorm
from ..vocab import PRECISIONS


def kl_near_x(loss: str, init: str) -> bool:
    """A KL(f(x) ‖ f(x_k)) attack started at or next to x (TRADES, BAT, FAT-for-TRADES, FRL).

    Its gradient at x_0 = x + 0.001·N(0, I) is second order in that offset: smaller than bf16's
    rounding of the activations, so under bf16 its sign steps follow rounding noise and the attack
    loses most of its strength (docs/performance.md, "Precision of the attacks")."""
    return loss == "kl" and init in ("normal", "none")


def check_precision(precision: str, key: str = "attack.precision") -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"{key} must be one of {', '.join(PRECISIONS)}, got {precision!r}")


@contextmanager
def _full_fp32_on_cuda() -> Iterator[None]:
    """cuDNN convolutions and matmuls in IEEE fp32 (no TF32) inside, restored on exit.

    Through torch's long-standing setters (``set_float32_matmul_precision``, ``cudnn.allow_tf32``),
    which keep its old and new TF32 views in agreement: setting only the new per-backend values
    leaves them disagreeing, and torch then refuses to read them (``set_float32_matmul_precision
    ("high")``, which Lightning suggests on every Ampere GPU, made every fp32 matmul fail)."""
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


@contextmanager
def _fp32(device_type: str) -> Iterator[None]:
    with torch.autocast(device_type, enabled=False):
        if device_type == "cuda":
            with _full_fp32_on_cuda():
                yield
        else:
            yield


class AttackPrecision:
    """The precision plan of one attack run (see ``PRECISIONS`` above).

    ``whole()`` wraps the attack; ``step(k)`` wraps the clean target (``k=0``) and the forward and
    backward of step k. Only ``fp32_first`` differs between steps: near x a KL attack's gradient
    is second order in the 0.001 offset, below bf16's rounding, but after one signed step of
    size step_size it is first order and bf16 keeps the attack's full strength (measured in
    docs/performance.md; tests/attacks/test_attack_precision.py).
    """

    def __init__(self, precision: str, device_type: str, loss: str = "ce", init: str = "uniform") -> None:
        check_precision(precision)
        if precision == "auto":
            precision = "fp32_first" if kl_near_x(loss, init) else "inherit"
        self.resolved, self.device_type = precision, device_type

    def whole(self):
        if self.resolved == "fp32":
            return _fp32(self.device_type)
        if self.resolved == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return nullcontext()

    def step(self, k: int):
        return _fp32(self.device_type) if self.resolved == "fp32_first" and k == 0 else nullcontext()


def attack_precision(precision: str, device_type: str, loss: str = "ce", init: str = "uniform"):
    """A context running everything inside in ``precision`` (``fp32``, ``bf16``, ``inherit``;
    ``auto`` resolved by loss and start, ``fp32_first`` as ``inherit`` since there are no steps)."""
    return AttackPrecision(precision, device_type, loss, init).whole()


class AutocastLogits(nn.Module):
    """``model`` run under bf16 autocast on its input's device, its logits returned in fp32.

    ``batlit.evaluate precision=bf16``: the attacks (PGD, torchattacks' AutoAttack, which reads
    losses back as numpy arrays) compute their losses and steps on fp32 logits as they expect.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x):
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run an attack with the model in eval mode (docs/design.md §3), restoring every submodule's flag.

    Inside, the model's BatchNorms run folded into their convolutions where the model declares
    such pairs and ``model.fold_batchnorm`` is on (:mod:`batlit.models.fold`): the weights are
    fixed for the whole attack, so they are folded once per call."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with folded_batchnorm(model):
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


def sample_budgets(eps: float | Tensor, step_size: float | Tensor, steps: int, x: Tensor) -> tuple[Any, Any]:
    """(ε, step) ready to broadcast against x: floats as given, tensors as (N, 1, 1, 1).

    A tensor is either one value per sample, shape (N,) (class-wise budgets: FRL, CFA, DAFA), or a
    0-dim tensor. Tensor values are checked on their device (``torch._assert_async``): a host read
    of ``eps.min()`` would stall a GPU once per training step.
    """
    if not isinstance(eps, Tensor) and not isinstance(step_size, Tensor):
        check_threat_model(eps, step_size, steps)
        return eps, step_size
    check_threat_model(0.0, 1.0, steps)
    checks = []
    for name, value, ok in (("eps", eps, lambda v: v >= 0), ("step_size", step_size, lambda v: v > 0)):
        if isinstance(value, Tensor):
            if value.ndim > 1 or (value.ndim == 1 and value.numel() != x.shape[0]):
                raise ValueError(f"attack.{name}: a tensor budget needs one value per sample ({x.shape[0]}), "
                                 f"got shape {tuple(value.shape)}")
            checks.append(ok(value).all())
        else:
            check_threat_model(eps if name == "eps" else 0.0, step_size if name == "step_size" else 1.0, steps)
    torch._assert_async(torch.stack(checks).all())
    shape = (-1, *([1] * (x.ndim - 1)))

    def broadcast(value: Any) -> Any:
        if not isinstance(value, Tensor):
            return value
        value = value.to(device=x.device, dtype=x.dtype)
        return value.view(shape) if value.ndim == 1 else value

    return broadcast(eps), broadcast(step_size)


def project(x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
    """Π onto B∞(x, ε) ∩ [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def random_start(
    x: Tensor, eps: float, init: str, init_std: float, generator: torch.Generator | None, project_start: bool = True
) -> Tensor:
    """x_0: uniform in the ε-ball (Madry), x + init_std·N(0, I) (TRADES/BAT), or x itself; projected
    onto B∞(x, ε) ∩ [0, 1] unless ``project_start`` is false (the TRADES lineage's KL attacks take
    their first gradient at x + 0.001·N as drawn, a saturated pixel slightly outside [0, 1])."""
    if init == "uniform":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x0 = x + (2 * noise - 1) * eps
    elif init == "normal":
        x0 = x + init_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    elif init == "none":
        x0 = x.clone()
    else:
        raise ValueError(f"attack.init must be one of uniform, normal, none; got {init!r}")
    return project(x0, x, eps) if project_start else x0


def input_gradient(loss: Tensor, x: Tensor) -> Tensor:
    """∇_x loss only: no weight gradients are computed or accumulated."""
    (grad,) = torch.autograd.grad(loss, x)
    return grad
