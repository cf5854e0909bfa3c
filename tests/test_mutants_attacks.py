"""The attacks' single steps against autograd by hand (gaps found by scripts/mutants.py, docs/testing.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from batlit.attacks import pgd
from batlit.attacks._common import random_start


def _linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 3)).double()


def test_one_kl_step_is_the_sign_of_the_gradient_of_kl_to_the_clean_probabilities():
    model = _linear()
    x = torch.rand(6, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    out = pgd(model, x, y, eps=0.5, step_size=0.01, steps=1, loss="kl", init="normal", init_std=0.05,
              generator=torch.Generator().manual_seed(2))
    x0 = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x0 = x0.clamp(0, 1).requires_grad_(True)
    p = F.softmax(model(x), 1).detach()
    kl = (p * (p.log() - F.log_softmax(model(x0), 1))).sum()   # KL(f(x) ‖ f(x_0)), summed
    (grad,) = torch.autograd.grad(kl, x0)
    torch.testing.assert_close(out, (x0.detach() + 0.01 * grad.sign()).clamp(0, 1))


def test_uniform_start_covers_both_sides_of_the_ball():
    x = torch.full((4000,), 0.5)
    delta = random_start(x, 0.1, "uniform", 0.0, torch.Generator().manual_seed(0)) - x
    assert float(delta.min()) < -0.09 and float(delta.max()) > 0.09 and abs(float(delta.mean())) < 0.01
