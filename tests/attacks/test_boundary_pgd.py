"""boundary_pgd on hand-checkable cases (docs/design.md §5.1).

The model is linear in one pixel: logits (0, w·(p − c)). With label 0, CE pushes p up by the step
s each iteration from a deterministic start (init_std = 0), so x_k = p_0 + k·s and the first
misclassified evaluation is the first k with p_0 + k·s > c.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batlit.attacks import boundary_pgd


class Threshold(nn.Module):
    def __init__(self, c: float, w: float = 10.0):
        super().__init__()
        self.c, self.w = c, w
        self.bn = nn.BatchNorm1d(1)  # a train-mode-sensitive layer, to check eval mode
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        p = x.flatten(1)[:, :1]
        z1 = self.w * (p - self.c)
        return torch.cat([torch.zeros_like(z1), z1], dim=1)


def _run(p0, y, *, c=0.35, tau=1, steps=10, eps=1.0, s=0.1, loss="ce"):
    model = Threshold(c)
    x = torch.tensor(p0, dtype=torch.float64).view(-1, 1, 1, 1)
    out = boundary_pgd(model.double(), x, torch.tensor(y), eps=eps, step_size=s, steps=steps, tau=tau,
                       init_std=0.0, loss=loss)
    return out, model


def _p(t):
    return t.flatten().tolist()


@pytest.mark.parametrize("tau,first_adv", [(0, 0.4), (1, 0.5), (2, 0.6)])
def test_crossing_step_last_clean_and_first_adv_for_each_tau(tau, first_adv):
    out, _ = _run([0.1], [0], tau=tau)
    assert out.steps.tolist() == [3]                 # x_3 = 0.4 > 0.35 is the first misclassified
    assert _p(out.last_clean) == pytest.approx([0.3])   # x_2
    assert _p(out.first_adv) == pytest.approx([first_adv])  # x_{3+tau}


def test_already_misclassified_at_start():
    # label 1 but p < c: misclassified at k = 0; CE on label 1 pushes p down, it stays misclassified
    out, _ = _run([0.2], [1], tau=1)
    assert out.steps.tolist() == [0]
    assert _p(out.last_clean) == pytest.approx([0.2])   # x_0
    assert _p(out.first_adv) == pytest.approx([0.1])    # x_1


def test_never_crossing_gives_x_K_for_both():
    out, _ = _run([0.1], [0], c=0.5, eps=0.25, steps=10)  # p is capped at 0.35 < c
    assert out.steps.tolist() == [10]
    assert _p(out.last_clean) == pytest.approx([0.35]) and _p(out.first_adv) == pytest.approx([0.35])


def test_fewer_than_tau_plus_one_misclassifications_gives_x_K():
    out, _ = _run([0.1], [0], tau=2, steps=5)   # first misclassified at k=3, only k=3,4 before K=5
    assert out.steps.tolist() == [3]
    assert _p(out.last_clean) == pytest.approx([0.3]) and _p(out.first_adv) == pytest.approx([0.6])


def test_batch_keeps_input_order_and_mixes_cases():
    p0, y = [0.1, 0.3, 0.2, 0.04, 0.0], [0, 0, 1, 0, 0]
    out, _ = _run(p0, y, tau=1, steps=6)
    # k*: 0.1 → 3; 0.3 → 1; label 1 (misclassified at the start) → 0; 0.04 → 4; 0.0 → 4
    assert out.steps.tolist() == [3, 1, 0, 4, 4]
    assert _p(out.last_clean) == pytest.approx([0.3, 0.3, 0.2, 0.34, 0.3])
    assert _p(out.first_adv) == pytest.approx([0.5, 0.5, 0.1, 0.54, 0.5])


def test_stops_early_once_every_first_adv_is_fixed():
    out, model = _run([0.3], [0], tau=0, steps=10)
    assert out.steps.tolist() == [1]
    assert model.calls == 2  # x_0 and x_1, then every sample is fixed


def test_stays_in_eps_ball_and_box_restores_mode_and_no_weight_grads():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3))
    model.train()
    x, y = torch.rand(32, 3, 8, 8), torch.randint(0, 3, (32,))
    out = boundary_pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=10)
    for t in (out.last_clean, out.first_adv):
        assert t.shape == x.shape and (t - x).abs().max() <= 8 / 255 + 1e-6
        assert t.min() >= 0 and t.max() <= 1
    assert model.training and all(p.grad is None for p in model.parameters())
    assert out.steps.dtype == torch.long and out.steps.min() >= 0 and out.steps.max() <= 10


def test_deterministic_start_and_generator():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    x, y = torch.rand(8, 3, 4, 4), torch.randint(0, 3, (8,))
    kw = dict(eps=0.1, step_size=0.02, steps=5)
    a = boundary_pgd(model, x, y, init_std=0.0, loss="ce", **kw)
    b = boundary_pgd(model, x, y, init_std=0.0, loss="ce", **kw)
    assert torch.equal(a.first_adv, b.first_adv)
    c = boundary_pgd(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    d = boundary_pgd(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(c.last_clean, d.last_clean) and torch.equal(c.steps, d.steps)


def test_bad_tau_and_loss():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
    x, y = torch.rand(2, 3, 1, 1), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="tau"):
        boundary_pgd(model, x, y, eps=0.1, step_size=0.01, steps=2, tau=-1)
    with pytest.raises(ValueError, match="attack.loss"):
        boundary_pgd(model, x, y, eps=0.1, step_size=0.01, steps=2, loss="mse")


@pytest.mark.parametrize("compact,early_exit", [(False, True), (False, False)])
def test_frozen_and_compacted_modes_agree(compact, early_exit):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    x, y = torch.rand(64, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (64,))
    model = model.double()
    kw = dict(eps=8 / 255, step_size=2 / 255, steps=10, tau=1, init_std=0.0, loss="ce")
    ref = boundary_pgd(model, x, y, compact=True, **kw)
    out = boundary_pgd(model, x, y, compact=compact, early_exit=early_exit, **kw)
    assert 0 < (ref.steps < 10).sum() < 64  # a mix of crossing and never-crossing samples
    assert torch.equal(out.steps, ref.steps) and torch.equal(out.correct_iterates, ref.correct_iterates)
    torch.testing.assert_close(out.last_clean, ref.last_clean)
    torch.testing.assert_close(out.first_adv, ref.first_adv)


def test_hand_case_without_compaction():
    model = Threshold(0.35).double()
    x = torch.tensor([0.1, 0.3, 0.2, 0.04, 0.0], dtype=torch.float64).view(-1, 1, 1, 1)
    out = boundary_pgd(model, x, torch.tensor([0, 0, 1, 0, 0]), eps=1.0, step_size=0.1, steps=6, tau=1,
                       init_std=0.0, loss="ce", compact=False)
    assert out.steps.tolist() == [3, 1, 0, 4, 4]
    assert _p(out.first_adv) == pytest.approx([0.5, 0.5, 0.1, 0.54, 0.5])


class Bump(nn.Module):
    """logits (0, w·(r² − (p − c)²)): class 1 only in a narrow band around c, so CE ascent for
    label 0 enters the band, overshoots out of it, and comes back: wrong, right, wrong, ..."""

    def __init__(self, c=0.305, r=0.02, w=100.0):
        super().__init__()
        self.c, self.r, self.w = c, r, w

    def forward(self, x):
        p = x.flatten(1)[:, :1]
        z1 = self.w * (self.r**2 - (p - self.c) ** 2)
        return torch.cat([torch.zeros_like(z1), z1], dim=1)


def test_correct_iterates_count_a_sample_that_is_misclassified_then_correct_again():
    x = torch.tensor([0.1], dtype=torch.float64).view(1, 1, 1, 1)
    # iterates 0.1 C, 0.2 C, 0.3 W, 0.4 C, 0.3 W, 0.4 C: kappa = 4 of K = 6 evaluations
    out = boundary_pgd(Bump().double(), x, torch.tensor([0]), eps=1.0, step_size=0.1, steps=6, tau=6,
                       init_std=0.0, loss="ce")
    assert out.correct_iterates.tolist() == [4]
    assert out.steps.tolist() == [2]
    assert _p(out.first_adv) == pytest.approx([0.3])  # never fixed (tau >= K): x_K = x_6
    # with tau = 1 the sample is fixed at its 2nd misclassified evaluation (k = 4) and evaluated 5 times
    fixed = boundary_pgd(Bump().double(), x, torch.tensor([0]), eps=1.0, step_size=0.1, steps=6, tau=1,
                         init_std=0.0, loss="ce")
    assert fixed.correct_iterates.tolist() == [3] and _p(fixed.first_adv) == pytest.approx([0.3])


def test_uniform_start_and_step_noise_are_seeded_and_stay_in_the_ball():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    x, y = torch.rand(16, 3, 4, 4), torch.randint(0, 3, (16,))
    kw = dict(eps=0.05, step_size=0.01, steps=5, loss="ce", init="uniform", step_noise_std=0.001)
    a = boundary_pgd(model, x, y, generator=torch.Generator().manual_seed(2), **kw)
    b = boundary_pgd(model, x, y, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a.first_adv, b.first_adv) and torch.equal(a.correct_iterates, b.correct_iterates)
    assert (a.first_adv - x).abs().max() <= 0.05 + 1e-6
    plain = boundary_pgd(model, x, y, generator=torch.Generator().manual_seed(2), **{**kw, "step_noise_std": 0.0})
    assert not torch.equal(plain.first_adv, a.first_adv)
