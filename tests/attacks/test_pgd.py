"""PGD: stays in the ε-ball and [0, 1], raises the loss it attacks, leaves the model as it was; its
single KL step and its uniform start against autograd by hand."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batlit.attacks import PGD, pgd
from batlit.attacks._common import random_start


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 5))


def _batch(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("loss,init", [("ce", "uniform"), ("kl", "normal"), ("ce", "none")])
def test_stays_in_ball_and_box(loss, init):
    model, (x, y) = _model(), _batch()
    x_adv = pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=5, loss=loss, init=init)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_raises_the_ce_loss():
    model, (x, y) = _model(), _batch(64)
    model.eval()
    x_adv = pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=10, init="none")
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y) + 0.01


def test_raises_the_kl_loss():
    model, (x, y) = _model(), _batch(64)
    model.eval()
    x_adv = pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=10, loss="kl", init="normal")
    x_rand = (x + (torch.rand_like(x) * 2 - 1) * 8 / 255).clamp(0, 1)
    with torch.no_grad():
        p = F.softmax(model(x), 1)
        kl = lambda x_: F.kl_div(F.log_softmax(model(x_), 1), p, reduction="batchmean")
        assert kl(x_adv) > 5 * kl(x_rand)


def test_restores_mode_and_computes_no_weight_gradients():
    model, (x, y) = _model(), _batch()
    model.train()
    model[1].eval()  # a submodule in its own mode must keep it
    pgd(model, x, y, eps=0.03, step_size=0.01, steps=2)
    assert model.training and not model[1].training
    assert all(p.grad is None for p in model.parameters())


def test_generator_makes_it_reproducible_and_eps_zero_is_identity():
    model, (x, y) = _model(), _batch()
    a = pgd(model, x, y, eps=0.03, step_size=0.01, steps=3, generator=torch.Generator().manual_seed(3))
    b = pgd(model, x, y, eps=0.03, step_size=0.01, steps=3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(pgd(model, x, y, eps=0.0, step_size=0.01, steps=3), x)


def test_callable_object_and_bad_arguments():
    model, (x, y) = _model(), _batch()
    attack = PGD(model, eps=8 / 255, steps=3)
    assert attack(x, y).shape == x.shape and "steps=3" in repr(attack)
    with pytest.raises(ValueError, match="attack.eps"):
        pgd(model, x, y, eps=-0.1, step_size=0.01, steps=3)
    with pytest.raises(ValueError, match="attack.step_size"):
        pgd(model, x, y, eps=0.1, step_size=0, steps=3)
    with pytest.raises(ValueError, match="attack.steps"):
        pgd(model, x, y, eps=0.1, step_size=0.01, steps=0)
    with pytest.raises(ValueError, match="attack.loss"):
        pgd(model, x, y, eps=0.1, step_size=0.01, steps=1, loss="hinge")


def test_per_sample_eps_bounds_each_sample():
    model, (x, y) = _model(), _batch(8)
    eps = torch.tensor([0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07])
    x_adv = pgd(model, x, y, eps=eps, step_size=0.01, steps=8)
    per_sample = (x_adv - x).abs().flatten(1).max(1).values
    assert torch.all(per_sample <= eps + 1e-6) and per_sample[0] == 0 and per_sample[-1] > 0.05


@pytest.mark.parametrize("attack", ["pgd", "boundary_pgd"])
def test_unknown_loss_is_one_line_before_any_forward_pass(attack):
    from batlit.attacks import boundary_pgd

    model, (x, y) = _model(), _batch(4)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    run = pgd if attack == "pgd" else boundary_pgd
    with pytest.raises(ValueError, match=r"attack.loss must be one of ce, kl, cw; got 'hinge'"):
        run(model, x, y, eps=8 / 255, step_size=2 / 255, steps=3, loss="hinge")
    assert calls == []


def _linear_double():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 3)).double()


def test_one_kl_step_is_the_sign_of_the_gradient_of_kl_to_the_clean_probabilities():
    model = _linear_double()
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
