"""Boundary examples from one early-stopping PGD trajectory (BAT, docs/design.md §5.1).

The BAT authors run two trajectories (``stop_to_lastclean``, ``stop_to_firstadv``), each with
its own random start and a per-sample Python loop. Both outputs lie on one trajectory, so one
batched loop gives both at the cost of a single K-step PGD; samples whose ``first_adv`` is fixed
leave the batch (exact: the model is in eval mode, so samples do not interact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import sync
from ._common import AttackPrecision, eval_mode, input_gradient, project, random_start, sample_budgets
from .pgd import attack_loss, check_loss, clean_probabilities


@dataclass
class BoundaryExamples:
    """Outputs of :func:`boundary_pgd`, each in the input's order.

    Attributes:
        last_clean: x_clean^Φ — the last iterate still classified correctly before the first
            misclassified one (x_0 if x_0 is misclassified; x_K if no iterate is).
        first_adv: x_adv^Φ — the iterate at the (τ+1)-th misclassified evaluation (x_K if fewer).
        steps: k*, the index of the first misclassified evaluation, K if none (long, per sample).
        correct_iterates: how many of the evaluated iterates were classified correctly (long, per
            sample) — GAIRAT's geometry value κ when nothing stops early (``tau >= steps``).
    """

    last_clean: Tensor
    first_adv: Tensor
    steps: Tensor
    correct_iterates: Tensor


def boundary_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    tau: int = 1,
    init_std: float = 0.001,
    loss: str = "kl",
    generator: torch.Generator | None = None,
    init: str = "normal",
    step_noise_std: float = 0.0,
    compact: bool = True,
    early_exit: bool = True,
    precision: str = "auto",
) -> BoundaryExamples:
    """Early-stopping PGD that returns BAT's ``last_clean`` and ``first_adv`` from ONE trajectory.

    x_0 = Π(x + init_std·N(0, I)); at k = 0 … K−1 the model classifies x_k, then
    x_{k+1} = Π_{B∞(x, ε) ∩ [0,1]}(x_k + step_size·sign(∇ loss(x_k))). A sample stops moving once
    its ``first_adv`` is fixed, and the loop ends when every sample's is.

    Args:
        model: maps [0, 1] images to logits; run in eval mode, its mode restored on exit.
        x, y: images (N, C, H, W) in [0, 1] and labels (N,).
        eps, step_size, steps: the L∞ budget, the step and K; ε and the step may be one value per
            sample, (N,) tensors (class-wise budgets), as in :func:`~batlit.attacks.pgd`.
        tau: misclassified evaluations to pass after the first before ``first_adv`` is taken
            (the authors' code: 1, as in FAT; the paper's Algorithm 1 reads as 0).
        init_std: ξ of the Gaussian start (the authors' code: 0.001); 0 starts at x exactly.
        loss: ``"kl"``, KL(f(x) ‖ f(x_k)) summed (the authors' code), or ``"ce"``.
        generator: optional torch.Generator on x's device for the start and the step noise.
        init: ``"normal"`` (x + init_std·N(0, I), BAT and FAT-for-TRADES) or ``"uniform"`` in the
            ε-ball (FAT for AT, GAIRAT).
        step_noise_std: ω, Gaussian noise added to every step before the projection (FAT).
        compact: drop fixed samples from the batch (one host sync per step; the fastest on the CPU
            and on an H200 in docs/performance.md). False freezes them in place instead, which
            keeps shapes static.
        early_exit: without compaction, end the loop once every ``first_adv`` is fixed (one host
            sync per step); False runs all K steps with no host sync.
    """
    eps, step_size = sample_budgets(eps, step_size, steps, x)
    if int(tau) != tau or tau < 0:
        raise ValueError(f"method.tau must be an integer >= 0, got {tau}")
    check_loss(loss)
    K, n = int(steps), x.shape[0]
    x = x.detach()
    plan = AttackPrecision(precision, x.device.type, loss, init)
    with eval_mode(model), torch.enable_grad(), plan.whole():
        with plan.step(0):
            clean_probs = clean_probabilities(model, x, loss)
        x_k = random_start(x, eps, init, init_std, generator)
        last_clean, first_adv = x_k.clone(), x_k.clone()
        first_mis = torch.full((n,), K, dtype=torch.long, device=x.device)
        # The samples of the current batch; with compaction, `rows` maps them back to the input.
        rows = torch.arange(n, device=x.device)
        x_a, y_a, probs_a, prev = x, y, clean_probs, x_k       # prev = x_{k-1} (x_0 at k = 0)
        eps_a, step_a = eps, step_size                         # per-sample budgets shrink with the batch
        first_mis_a = first_mis.clone()
        mis_count = torch.zeros(n, dtype=torch.long, device=x.device)
        correct = torch.zeros(n, dtype=torch.long, device=x.device)   # κ, written back like first_mis
        correct_a = correct.clone()
        active = torch.ones(n, dtype=torch.bool, device=x.device)   # first_adv not yet fixed
        for k in range(K):
            x_k.requires_grad_(True)
            with plan.step(k):
                logits = model(x_k)
                grad = input_gradient(attack_loss(loss, logits, y_a, probs_a), x_k)
            with torch.no_grad():
                x_k = x_k.detach()
                wrong = logits.argmax(dim=1) != y_a
                correct_a += ~wrong & active
                mis = wrong & active
                crossed = mis & (first_mis_a == K)        # first misclassified evaluation: k* = k
                first_mis_a = torch.where(crossed, k, first_mis_a)
                last_clean[rows] = torch.where(_bcast(crossed, prev), prev, last_clean[rows])
                mis_count += mis
                fixed = mis & (mis_count == tau + 1)
                first_adv[rows] = torch.where(_bcast(fixed, x_k), x_k, first_adv[rows])
                active &= ~fixed
                step = step_a * grad.sign()
                if step_noise_std > 0:
                    step = step + step_noise_std * torch.randn(
                        x_k.shape, generator=generator, device=x_k.device, dtype=x_k.dtype)
                x_next = project(x_k + step, x_a, eps_a)
                if compact:
                    keep = sync.nonzero_rows(active)      # the one host sync per step
                    if keep.numel() < len(rows):
                        first_mis[rows], correct[rows] = first_mis_a, correct_a
                        if keep.numel() == 0:
                            break
                        rows, x_a, y_a, first_mis_a, correct_a, mis_count, active = (
                            rows[keep], x_a[keep], y_a[keep], first_mis_a[keep], correct_a[keep],
                            mis_count[keep], active[keep])
                        probs_a = probs_a[keep] if probs_a is not None else None
                        eps_a, step_a = _rows(eps_a, keep), _rows(step_a, keep)
                        x_k, x_next = x_k[keep], x_next[keep]
                else:
                    x_next = torch.where(_bcast(active, x_k), x_next, x_k)   # fixed samples stay put
                    if early_exit and not sync.any_true(active):             # the one host sync per step
                        first_mis[rows], correct[rows] = first_mis_a, correct_a
                        break
                prev, x_k = x_k, x_next
        else:
            # Samples still moving after K steps: first_adv = x_K; never misclassified: last_clean = x_K.
            first_mis[rows], correct[rows] = first_mis_a, correct_a
            first_adv[rows] = torch.where(_bcast(active, x_k), x_k, first_adv[rows])
            never = first_mis_a == K
            last_clean[rows] = torch.where(_bcast(never, x_k), x_k, last_clean[rows])
    return BoundaryExamples(last_clean.detach(), first_adv.detach(), first_mis, correct)


def _rows(value: float | Tensor, keep: Tensor) -> float | Tensor:
    """The kept samples' budget: a per-sample (N, 1, 1, 1) tensor shrinks, a scalar stays."""
    return value[keep] if isinstance(value, Tensor) and value.ndim > 0 else value


def _bcast(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))
