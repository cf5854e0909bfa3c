"""L∞ projected gradient descent (Madry et al. 2018), batched on the model's device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..vocab import ATTACK_LOSSES as LOSSES
from ._common import (AttackPrecision, check_precision, check_threat_model, eval_mode, input_gradient, project,
                      random_start, sample_budgets)

CW_CONFIDENCE = 50.0  # κ of the CW loss in the FAT/GAIRAT evaluation code


def cw_margin(logits: Tensor, y: Tensor, confidence: float = CW_CONFIDENCE) -> Tensor:
    """Per-sample CW margin loss −max(z_y − max_{j≠y} z_j + κ, 0) (Carlini & Wagner 2017, L∞ form)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return -(true - other + confidence).clamp(min=0)


def attack_loss(loss: str, logits_adv: Tensor, y: Tensor, clean_probs: Tensor | None) -> Tensor:
    """The loss an attack ascends, summed over the batch so each sample's step is its own.

    ``ce``: cross-entropy with the true label (PGD-AT, FAT, GAIRAT).
    ``kl``: KL(f(x) ‖ f(x_adv)) as in the TRADES and BAT code (``KLDivLoss(size_average=False)``).
    ``cw``: the CW margin (:func:`cw_margin`), the "CW∞" evaluation attack.
    """
    if loss == "ce":
        return F.cross_entropy(logits_adv, y, reduction="sum")
    if loss == "kl":
        return F.kl_div(F.log_softmax(logits_adv, dim=1), clean_probs, reduction="sum")
    if loss == "cw":
        return cw_margin(logits_adv, y).sum()
    raise ValueError(f"attack.loss must be one of {', '.join(LOSSES)}; got {loss!r}")


def check_loss(loss: str) -> None:
    """One clear line for an unknown ``attack.loss``, before any forward pass."""
    if loss not in LOSSES:
        raise ValueError(f"attack.loss must be one of {', '.join(LOSSES)}; got {loss!r}")


def clean_probabilities(model: nn.Module, x: Tensor, loss: str) -> Tensor | None:
    """f(x), the fixed target of the ``kl`` loss, computed once before the loop; None for the others."""
    if loss != "kl":
        return None
    with torch.no_grad():
        return F.softmax(model(x), dim=1)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    loss: str = "ce",
    init: str = "uniform",
    init_std: float = 0.001,
    generator: torch.Generator | None = None,
    precision: str = "auto",
    project_start: bool = True,
) -> Tensor:
    """Return adversarial examples in B∞(x, ε) ∩ [0, 1] after ``steps`` signed-gradient steps.

    Args:
        model: maps images in [0, 1] to logits; it runs in eval mode and its mode is restored.
        x, y: images (N, C, H, W) in [0, 1] and integer labels (N,).
        eps, step_size, steps: the L∞ budget and the step, each a float or one value per sample as
            an (N,) tensor (class-wise budgets: FRL's margins, CFA's and DAFA's ε_y and step_y; a
            0-dim tensor also works), and the number of steps. Tensor values are checked on their
            device, without a host sync (:func:`~batlit.attacks._common.sample_budgets`).
        loss: ``"ce"`` (PGD-AT, evaluation), ``"kl"`` (TRADES) or ``"cw"`` (CW∞ evaluation).
        init: ``"uniform"`` in the ε-ball, ``"normal"`` (x + init_std·N(0, I)) or ``"none"``.
        generator: optional torch.Generator on x's device for the random start.
        project_start: project the random start onto the ε-ball and [0, 1] (default); False starts
            from x + init_std·N as drawn, as the KL attacks of TRADES, FRL, CFA, WAT, DAFA and FAAL
            do (yaodongyu/TRADES ``trades_loss``: no clamp before the first step).
        precision: ``auto``, ``fp32``, ``fp32_first``, ``bf16`` or ``inherit``
            (:class:`batlit.attacks.AttackPrecision`): ``auto`` keeps the ``kl`` loss from a
            ``normal`` or ``none`` start at full strength under a bf16 training step.
    """
    eps, step_size = sample_budgets(eps, step_size, steps, x)  # per-sample tensors: checked on the device
    check_loss(loss)
    x = x.detach()
    plan = AttackPrecision(precision, x.device.type, loss, init)
    with eval_mode(model), torch.enable_grad(), plan.whole():
        with plan.step(0):
            clean_probs = clean_probabilities(model, x, loss)
        x_adv = random_start(x, eps, init, init_std, generator, project_start)
        for k in range(int(steps)):
            x_adv.requires_grad_(True)
            with plan.step(k):
                grad = input_gradient(attack_loss(loss, model(x_adv), y, clean_probs), x_adv)
            x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


class PGD:
    """torchattacks-style callable: ``PGD(model, eps=8/255)(images, labels) -> adv_images``."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 10,
        loss: str = "ce",
        init: str = "uniform",
        init_std: float = 0.001,
        precision: str = "auto",
    ) -> None:
        check_threat_model(eps, step_size, steps)
        check_precision(precision)
        self.model = model
        self.kwargs = dict(eps=eps, step_size=step_size, steps=steps, loss=loss, init=init, init_std=init_std,
                           precision=precision)

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return pgd(self.model, images, labels, generator=generator, **self.kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"PGD({args})"
