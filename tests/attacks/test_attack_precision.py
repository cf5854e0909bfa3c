"""Precision without weaker attacks (docs/performance.md, "Precision of the attacks").

Under bf16 autocast a KL(f(x) ‖ f(x_k)) attack started at x + 0.001·N(0, I) loses most of its
strength: its gradient there is second order in the offset, below bf16's rounding. Each attack
therefore has a ``precision``; ``auto`` runs such KL attacks ``fp32_first`` (the clean target and
the first step in fp32, the rest in the surrounding autocast) and every other attack in the
surrounding autocast. These tests train a small CNN, wrap the training step in bf16 autocast as
Lightning does for ``trainer.precision=bf16-mixed``, and compare the attacks with fp32.
"""

from __future__ import annotations

import math

import pytest
import torch

from batlit.attacks import attack_precision, kl_near_x, pgd
from batlit.attacks._common import _full_fp32_on_cuda
from batlit.methods import BAT, PGDAT, TRADES
from batlit.models import small_cnn
from batlit.tools.precision_check import ATTACK, OPTIMIZER, method, probe_model

N = 512


def bf16() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained for ~2 s on noisy 32x32 class prototypes, and the test images it
    classifies right: accurate enough that attacks have something to flip, weak enough that they
    flip a good part of it (the model ``python -m batlit.precision_check`` measures)."""
    return probe_model(N)


def _sem(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1 / n) / n)


def _flip_rate(model, x, y, x_adv) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) != y).float().mean())


def test_trades_attack_keeps_its_strength_under_bf16_autocast(trained):
    model, x, y = trained
    rates, start = {}, {}
    for name, precision, context in (("fp32", "auto", torch.autocast("cpu", enabled=False)),
                                     ("bf16 step, auto", "auto", bf16()), ("bf16 attack", "bf16", bf16())):
        torch.manual_seed(1)  # the same random start in every mode
        with context:
            x_adv = method(TRADES, model, precision).perturb(x, y)
        rates[name] = _flip_rate(model, x, y, x_adv)
        # the same KL attack from a start projected into [0, 1]: where the probe's many saturated
        # pixels do not carry TRADES' unclamped start noise (bf16 keeps it near 0), bf16 loses it
        torch.manual_seed(1)
        with context:
            x_adv = pgd(model, x, y, eps=ATTACK["eps"], step_size=ATTACK["train"]["step_size"],
                        steps=ATTACK["train"]["steps"], loss="kl", init="normal", precision=precision)
        start[name] = _flip_rate(model, x, y, x_adv)
    n = len(y)
    for found in (rates, start):
        base = found["fp32"]
        assert base > 0.2, found  # the attack has something to lose
        assert abs(found["bf16 step, auto"] - base) <= 3 * _sem(base, n), found
    # the bug this guards against: the same attack in bf16 misses many of fp32's flips
    assert start["fp32"] - start["bf16 attack"] > 3 * _sem(start["fp32"], n), start


def test_bat_steps_to_the_boundary_match_fp32_under_bf16_autocast(trained):
    model, x, y = trained
    steps = {}
    for name, precision, context in (("fp32", "auto", torch.autocast("cpu", enabled=False)),
                                     ("bf16 step, auto", "auto", bf16()), ("bf16 attack", "bf16", bf16())):
        bat = method(BAT, model, precision)
        torch.manual_seed(1)
        with context:
            bat.perturb(x, y)
        stats = bat.steps_to_boundary.compute()
        steps[name] = (float(stats["never"]), float(stats["mean"]))
    n = len(y)
    never, mean = steps["fp32"]
    assert 0.05 < never < 0.95, steps
    assert abs(steps["bf16 step, auto"][0] - never) <= 3 * _sem(never, n), steps
    assert abs(steps["bf16 step, auto"][1] - mean) <= 0.3, steps
    assert steps["bf16 attack"][0] - never > 3 * _sem(never, n), steps  # bf16 leaves more never crossed


def test_ce_attack_under_bf16_matches_fp32_within_noise(trained):
    model, x, y = trained
    rates = []
    for context in (torch.autocast("cpu", enabled=False), bf16()):
        torch.manual_seed(1)
        with context:
            x_adv = method(PGDAT, model).perturb(x, y)
        rates.append(_flip_rate(model, x, y, x_adv))
    assert rates[0] > 0.2 and abs(rates[1] - rates[0]) <= 3 * _sem(rates[0], len(y)), rates


def test_attack_precision_resolves_auto_by_loss_and_start():
    assert kl_near_x("kl", "normal") and kl_near_x("kl", "none")
    assert not kl_near_x("kl", "uniform") and not kl_near_x("ce", "normal")
    seen = []
    model = torch.nn.Linear(4, 3)
    model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, y = torch.rand(5, 4), torch.randint(0, 3, (5,))
    f32, b16 = torch.float32, torch.bfloat16
    cases = [  # forwards: the clean target (kl only), then steps 0, 1, 2
        ("auto", "kl", "normal", [f32, f32, b16, b16]), ("fp32_first", "kl", "normal", [f32, f32, b16, b16]),
        ("auto", "ce", "uniform", [b16, b16, b16]), ("inherit", "kl", "normal", [b16] * 4),
        ("fp32", "ce", "uniform", [f32] * 3), ("fp32", "kl", "normal", [f32] * 4), ("bf16", "kl", "normal", [b16] * 4)]
    for precision, loss, init, expected in cases:
        seen.clear()
        with bf16():
            pgd(model, x, y, eps=0.1, step_size=0.05, steps=3, loss=loss, init=init, precision=precision)
        assert seen == expected, (precision, loss, init, seen)
    seen.clear()
    pgd(model, x, y, eps=0.1, step_size=0.05, steps=1, precision="bf16")  # bf16 even without an outer autocast
    assert set(seen) == {torch.bfloat16}
    with pytest.raises(ValueError, match="attack.precision must be one of auto, fp32, fp32_first, bf16, inherit, got 'fp16'"):
        pgd(model, x, y, eps=0.1, step_size=0.05, steps=1, precision="fp16")


@pytest.mark.parametrize("user_matmul_precision", ["highest", "high"])
def test_fp32_attacks_on_a_gpu_turn_tf32_off_and_restore_it(user_matmul_precision):
    """Inside: no TF32 for convolutions or matmuls, in torch's old and new views alike (reading
    either raises when they disagree); after, the user's settings, also after an exception."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(user_matmul_precision)  # "high": what Lightning suggests on Ampere
    try:
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                 conv.fp32_precision, matmul.fp32_precision)
        with _full_fp32_on_cuda():
            assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
            assert "tf32" not in (conv.fp32_precision, matmul.fp32_precision)  # the new view agrees
        with pytest.raises(KeyError), _full_fp32_on_cuda():
            raise KeyError("an attack that fails")
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                conv.fp32_precision, matmul.fp32_precision) == saved
        with attack_precision("fp32", "cpu"):  # on the CPU nothing global is touched
            assert (conv.fp32_precision, matmul.fp32_precision) == saved[2:]
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("precision, expected", [("fp32", {False}), ("bf16", {True})])
def test_the_test_split_runs_in_attack_test_precision_whatever_surrounds_it(precision, expected):
    model = small_cnn(num_classes=3, in_channels=1, width=4)
    attack = {**ATTACK, "test": {**ATTACK["test"], "steps": 2, "precision": precision}}
    method = PGDAT(model, attack=attack, optimizer=OPTIMIZER)
    seen = []
    model.register_forward_pre_hook(lambda m, i: seen.append(torch.is_autocast_enabled("cpu")))
    with bf16():
        method.test_step((torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])), 0)
    assert seen and set(seen) == expected


def test_a_bad_precision_is_one_line_naming_the_key():
    from omegaconf import OmegaConf

    from batlit.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"^attack.train.precision must be one of auto, fp32, fp32_first, bf16, inherit, got 'half'$"):
        validate(OmegaConf.create({"attack": {"train": {"precision": "half"}}}))
    attack = {**ATTACK, "val": {**ATTACK["val"], "precision": "fp16"}}
    with pytest.raises(ValueError, match="attack.val.precision must be one of"):
        PGDAT(small_cnn(num_classes=3, in_channels=1, width=4), attack=attack, optimizer=OPTIMIZER)


def test_bf16_evaluation_hands_the_attacks_fp32_logits_from_a_bf16_model():
    """``batlit.evaluate precision=bf16``: torchattacks' APGD reads its losses back as numpy arrays,
    which have no bf16; the wrapped model computes in bf16 and returns fp32 logits."""
    import torchattacks

    from batlit.attacks import AutocastLogits

    model = small_cnn(num_classes=3, in_channels=1, width=4).eval()
    inner = []
    model.classifier.register_forward_hook(lambda m, i, o: inner.append(o.dtype))
    wrapped = AutocastLogits(model)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    assert wrapped(x).dtype == torch.float32 and inner == [torch.bfloat16]
    x_adv = torchattacks.APGD(wrapped, norm="Linf", eps=0.1, steps=2, seed=0)(x, y)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 0.1 + 1e-6
