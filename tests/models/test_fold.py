"""BatchNorm folded into its convolution for the attacks' eval-mode passes (batlit.models.fold)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batlit.attacks import boundary_pgd, pgd
from batlit.models import preact_resnet18, resnet18, small_cnn
from batlit.models.fold import _FOLDED, folded_batchnorm, set_batchnorm_folding


def _with_statistics(model: nn.Module, image_size: int = 32) -> nn.Module:
    """Running statistics, γ and β far from their initial 0/1/1/0, so a wrong fold shows."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, 3, image_size, image_size) * 0.8 + 0.1)
    return model.eval()


MODELS = {
    "small_cnn": lambda cl: small_cnn(width=8, channels_last=cl),
    "resnet18": lambda cl: resnet18(width=8, channels_last=cl),  # every block kind: stem, shortcut, plain
}


def _batchnorm_calls(model: nn.Module) -> list[int]:
    calls = [0]

    def count(*_):
        calls[0] += 1

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_hook(count)
    return calls


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", list(MODELS))
def test_folded_model_is_the_same_function_with_the_same_input_gradient(name, channels_last):
    model = _with_statistics(MODELS[name](channels_last))
    x = torch.rand(8, 3, 32, 32, requires_grad=True)
    y = torch.randint(0, 10, (8,))
    plain = model(x)
    (plain_grad,) = torch.autograd.grad(F.cross_entropy(plain, y), x)
    calls = _batchnorm_calls(model)
    with folded_batchnorm(model):
        folded = model(x)
        (folded_grad,) = torch.autograd.grad(F.cross_entropy(folded, y), x)
    assert calls[0] == 0  # no BatchNorm ran: every one of them was folded
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(folded_grad, plain_grad, rtol=1e-4, atol=1e-6)
    assert plain.abs().max() > 0.1  # a real function, not a dead network


def test_folded_weight_keeps_the_layout_and_is_dropped_on_exit():
    model = _with_statistics(small_cnn(width=8, channels_last=True))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with folded_batchnorm(model):
        weight, bias = bns[0].__dict__[_FOLDED]
        assert weight.is_contiguous(memory_format=torch.channels_last)
        assert not weight.requires_grad and not bias.requires_grad  # the attack's gradients are the input's only
        with folded_batchnorm(model):  # nested: the outer fold stays
            pass
        assert all(_FOLDED in bn.__dict__ for bn in bns)
    assert not any(_FOLDED in bn.__dict__ for bn in bns)
    assert _FOLDED not in str(model.state_dict().keys())


def test_batchnorm_in_training_mode_is_never_folded():
    model = _with_statistics(small_cnn(width=8))
    model.train()
    x = torch.rand(8, 3, 32, 32)
    torch.manual_seed(1)
    plain = model(x)
    with folded_batchnorm(model):
        inside = model(x)  # batch statistics, as training uses them
    torch.testing.assert_close(inside, plain)
    model.eval()
    with folded_batchnorm(model):
        model.train()  # a caller switching to train mode inside a fold gets batch statistics again
        switched = model(x)
    torch.testing.assert_close(switched, plain)
    model.train()  # a pair in train mode at entry is not folded at all: a train-mode forward inside moves
    with folded_batchnorm(model):  # the running statistics, and a later eval-mode pass must use the moved ones
        with torch.no_grad():
            model(torch.rand(16, 3, 32, 32) * 3)
        model.eval()
        inside_eval = model(x)
    torch.testing.assert_close(inside_eval, model(x))


def test_the_fold_follows_the_running_statistics():
    """Folded on entry from the statistics of that moment: BatchNorm's running averages move
    every training step, and a stale fold would attack yesterday's model."""
    model = _with_statistics(small_cnn(width=8))
    x = torch.rand(4, 3, 32, 32)
    with folded_batchnorm(model):
        before = model(x)
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 3, 32, 32))
    model.eval()
    with folded_batchnorm(model):
        after = model(x)
    torch.testing.assert_close(after, model(x), rtol=1e-5, atol=1e-5)
    assert (after - before).abs().max() > 1e-3


@pytest.mark.parametrize("attack", ["pgd", "boundary_pgd"])
def test_attacks_fold_unless_the_model_says_no(attack):
    torch.manual_seed(0)
    model = _with_statistics(small_cnn(width=8))
    x, y = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    calls = _batchnorm_calls(model)

    def run():
        g = torch.Generator().manual_seed(3)
        if attack == "pgd":
            return pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=5, generator=g)
        return boundary_pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=5, generator=g).first_adv

    model.train()  # as in a training step: the attack switches to eval mode and back
    folded = run()
    assert calls[0] == 0
    assert model.training and all(m.training for m in model.modules())
    assert not any(_FOLDED in m.__dict__ for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    set_batchnorm_folding(model, False)
    plain = run()
    assert calls[0] > 0
    # the same attack: the two differ by float rounding only, which can flip the sign of a
    # near-zero gradient component now and then
    assert (folded - plain).abs().gt(1e-6).float().mean() < 0.01


def test_models_without_pairs_run_as_before():
    model = _with_statistics(preact_resnet18(width=8))  # BatchNorm before each convolution
    x = torch.rand(2, 3, 32, 32)
    calls = _batchnorm_calls(model)
    with folded_batchnorm(model):
        model(x)
    assert calls[0] > 0


def test_fold_key_is_checked():
    with pytest.raises(ValueError, match="model.fold_batchnorm must be true or false, got 'no'"):
        small_cnn(width=8, fold_batchnorm="no")
    assert small_cnn(width=8, fold_batchnorm=False).features[0].fold_batchnorm is False


def test_bench_compares_the_defaults_with_the_plain_algorithm_unfolded():
    """bench baseline=true: the fast setting folds as the model says, the plain one never does."""
    from batlit.tools.bench import _layout

    base = small_cnn(width=4)
    x = torch.rand(2, 3, 8, 8)
    for folded in (True, False):
        model, _, _ = _layout(base, x, torch.device("cpu"), "32", False, folded)
        assert {m.fold_batchnorm for m in model.modules() if hasattr(m, "conv_bn_pairs")} == {folded}
    assert base.features[0].fold_batchnorm is True  # the copies' switch, not the base model's


def test_an_evaluation_runs_folded_throughout_with_the_same_results():
    """batlit.evaluate: the model stays in eval mode with fixed weights, so the clean pass, PGD and
    torchattacks' APGD all run on the folded convolutions; same results as unfolded."""
    import torchattacks

    from batlit.attacks import PGD
    from batlit.evaluate import evaluate

    model = _with_statistics(small_cnn(width=8))
    torch.manual_seed(0)
    data = [(torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))) for _ in range(2)]

    def run():
        components = [("PGD-5", PGD(model, eps=4 / 255, step_size=1 / 255, steps=5)),
                      ("APGD-CE", torchattacks.APGD(model, norm="Linf", eps=8 / 255, steps=5, seed=0))]
        out = evaluate(model, data, components, 10, torch.device("cpu"), progress=False)
        return out["results"], [fraction for _, _, fraction in out["robust_after"]]

    calls = _batchnorm_calls(model)
    folded, folded_after = run()
    assert calls[0] == 0 and not model.training
    set_batchnorm_folding(model, False)
    plain, plain_after = run()
    assert calls[0] > 0
    torch.testing.assert_close(folded["std_per_class"], plain["std_per_class"], equal_nan=True)
    assert max(abs(a - b) for a, b in zip(folded_after, plain_after)) <= 1 / 32  # at most one image of 32 flips
