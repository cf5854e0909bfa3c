"""BAT's objective against a direct computation on fixed logits (docs/design.md §5.2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batlit.methods import BAT
from batlit.methods.losses import kl_from_logits, kl_from_uniform, kl_to_uniform

ATTACK = {"eps": 8 / 255, "train": {"steps": 3, "step_size": 2 / 255},
          "val": {"steps": 2, "step_size": 2 / 255}, "test": {"steps": 2, "step_size": 2 / 255}}
OPT = {"name": "sgd", "lr": 0.1}


class Lookup(nn.Module):
    """Returns a fixed logit row per example set, keyed by the set's first pixel value."""

    num_classes = 4

    def __init__(self, table: dict[float, torch.Tensor]):
        super().__init__()
        self.table = table
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.stack([self.table[round(float(v), 3)] for v in x[:, 0, 0, 0]]) + self.w


def _direct(z, z_lc, z_fa, y, alpha, beta, direction):
    m, K = len(y), z.shape[1]
    p, p_lc, p_fa = (F.softmax(t, 1) for t in (z, z_lc, z_fa))
    ce = -torch.log(p_lc[torch.arange(m), y]).mean()
    kl = (p * (p.log() - p_fa.log())).sum() / m
    u = torch.full((K,), 1 / K)
    if direction == "model_to_uniform":
        unif = sum((q * (q.log() - u.log())).sum() / m for q in (p_lc, p_fa))
    else:
        unif = sum((u * (u.log() - q.log())).sum() / m for q in (p_lc, p_fa))
    return ce + beta * kl + alpha * unif


@pytest.mark.parametrize("direction", ["model_to_uniform", "uniform_to_model"])
@pytest.mark.parametrize("fused", [False, True])
def test_objective_matches_direct_computation(direction, fused):
    g = torch.Generator().manual_seed(0)
    z, z_lc, z_fa = (torch.randn(4, generator=g) * 2 for _ in range(3))
    model = Lookup({0.1: z, 0.2: z_lc, 0.3: z_fa})
    method = BAT(model, attack=ATTACK, optimizer=OPT, alpha=0.7, beta=6.0, uniform_kl=direction,
                 fused_forward=fused)
    m = 3
    x = torch.full((m, 1, 1, 1), 0.1)
    examples = {"x": x, "last_clean": torch.full_like(x, 0.2), "first_adv": torch.full_like(x, 0.3)}
    y = torch.tensor([0, 2, 3])
    losses = method.objective(x, y, examples)
    expected = _direct(z.expand(m, 4), z_lc.expand(m, 4), z_fa.expand(m, 4), y, 0.7, 6.0, direction)
    torch.testing.assert_close(losses["loss"], expected)
    assert set(losses) >= {"natural", "robust_kl", "target", "uniform_last_clean", "uniform_first_adv"}


def test_uniform_kl_helpers_and_kl_direction():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = F.softmax(logits, 1)[0]
    assert kl_to_uniform(logits).item() == pytest.approx(math.log(3) + (p * p.log()).sum().item(), rel=1e-5)
    assert kl_from_uniform(logits).item() == pytest.approx((-(p.log()).mean() - math.log(3)).item(), rel=1e-5)
    assert kl_to_uniform(torch.zeros(2, 5)).item() == pytest.approx(0.0, abs=1e-6)
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    pa, pb = F.softmax(a, 1), F.softmax(b, 1)
    assert kl_from_logits(a, b).item() == pytest.approx((pa * (pa / pb).log()).sum().item(), rel=1e-5)


def test_ablation_source_and_target_choose_their_terms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    model.num_classes = 4
    x, y = torch.rand(6, 3, 4, 4), torch.randint(0, 4, (6,))
    none = BAT(model, attack=ATTACK, optimizer=OPT, target=[])
    ex = none.perturb(x, y)
    assert set(ex) == {"x", "last_clean", "first_adv"}
    out = none.objective(x, y, ex)
    assert out["target"].item() == 0.0 and "uniform_last_clean" not in out
    fixed = BAT(model, attack=ATTACK, optimizer=OPT, source="fixed")
    ex = fixed.perturb(x, y)
    assert set(ex) == {"x", "x_adv", "last_clean", "first_adv"}
    out = fixed.objective(x, y, ex)
    torch.testing.assert_close(out["natural"], F.cross_entropy(model(x), y))
    x_adv_only = BAT(model, attack=ATTACK, optimizer=OPT, target=["x_adv"])
    assert "x_adv" in x_adv_only.perturb(x, y)
    with pytest.raises(ValueError, match="method.target"):
        BAT(model, attack=ATTACK, optimizer=OPT, target=["x"])
    with pytest.raises(ValueError, match="method.uniform_kl"):
        BAT(model, attack=ATTACK, optimizer=OPT, uniform_kl="sideways")
    assert BAT(model, attack=ATTACK, optimizer=OPT, target="last_clean").target == ("last_clean",)
    with pytest.raises(ValueError, match="method.target"):
        BAT(model, attack=ATTACK, optimizer=OPT, target="x")


@pytest.mark.parametrize("attack_loss", ["kl", "ce"])
def test_attack_loss_chooses_what_the_boundary_trajectory_ascends(attack_loss):
    """docs/design.md §5.1: the trajectory ascends KL(f(x) ‖ f(x_k)) (default) or CE(f(x_k), y)."""
    from batlit.attacks import boundary_pgd

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    model.num_classes = 4
    x, y = torch.rand(8, 3, 4, 4), torch.randint(0, 4, (8,))
    bat = BAT(model, attack={**ATTACK, "train": {"steps": 6, "step_size": 0.02}}, optimizer=OPT,
              attack_loss=attack_loss)
    torch.manual_seed(1)
    ex = bat.perturb(x, y)
    expected = {}
    for loss in ("kl", "ce"):
        torch.manual_seed(1)
        expected[loss] = boundary_pgd(model, x, y, eps=8 / 255, step_size=0.02, steps=6, tau=1, loss=loss)
    other = "ce" if attack_loss == "kl" else "kl"
    torch.testing.assert_close(ex["first_adv"], expected[attack_loss].first_adv)
    assert not torch.equal(expected[attack_loss].first_adv, expected[other].first_adv)
    with pytest.raises(ValueError, match="method.attack_loss"):
        BAT(model, attack=ATTACK, optimizer=OPT, attack_loss="mse")


def test_target_distribution_and_distance_to_uniform():
    from batlit.analyze import distance_to_uniform, target_distribution

    confusion = torch.tensor([[5, 3, 1], [0, 4, 0], [2, 2, 6]])
    dist = target_distribution(confusion)  # off-diagonal column sums: [2, 5, 1] / 8
    torch.testing.assert_close(dist, torch.tensor([2 / 8, 5 / 8, 1 / 8], dtype=torch.double))
    d = distance_to_uniform(dist)
    expected_kl = sum(p * math.log(3 * p) for p in (2 / 8, 5 / 8, 1 / 8))
    assert d["kl_to_uniform"] == pytest.approx(expected_kl)
    assert d["tv_to_uniform"] == pytest.approx(0.5 * sum(abs(p - 1 / 3) for p in (2 / 8, 5 / 8, 1 / 8)))
    assert distance_to_uniform(torch.full((4,), 0.25, dtype=torch.double))["kl_to_uniform"] == pytest.approx(0)
