"""The benchmark's and the precision probe's choices, in-process (gaps found by scripts/mutants.py,
docs/testing.md; the CLI runs are in test_bench.py)."""

from __future__ import annotations

import pytest
import torch

import batlit.config
from batlit.bench import resolve_switches
from batlit.precision_check import modes, probe_model


@pytest.mark.parametrize("fast,expected", [(True, ("bf16", True)), (False, ("32", False))])
def test_auto_switches_follow_where_bf16_is_fast(monkeypatch, fast, expected):
    monkeypatch.setattr(batlit.config, "cpu_has_bf16", lambda: fast)
    assert resolve_switches("auto", "auto", torch.device("cpu")) == expected
    assert resolve_switches("32", False, torch.device("cpu")) == ("32", False)


def test_each_precision_mode_runs_the_attack_precision_its_name_says():
    assert {name: precision for name, (precision, _) in modes("cpu").items()} == {
        "fp32": "fp32", "bf16 step, auto": "auto", "bf16 step, fp32 attack": "fp32", "bf16 attack": "bf16"}


def test_the_probe_keeps_only_images_the_model_gets_right():
    model, x, y = probe_model(n_test=64)
    with torch.no_grad():
        assert 0 < len(y) < 64 and bool((model(x).argmax(1) == y).all())
