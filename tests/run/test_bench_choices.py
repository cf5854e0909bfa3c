"""The benchmark's and the precision probe's choices, in-process (gaps found by scripts/mutants.py,
docs/testing.md; the CLI runs are in cli/test_bench_cli.py)."""

from __future__ import annotations

import pytest
import torch

import batlit.config.hardware
from batlit.tools.bench import resolve_switches
from batlit.tools.precision_check import modes, probe_model


@pytest.mark.parametrize("fast,expected", [(True, ("bf16", True)), (False, ("32", False))])
def test_auto_switches_follow_where_bf16_is_fast(monkeypatch, fast, expected):
    monkeypatch.setattr(batlit.config.hardware, "cpu_has_bf16", lambda: fast)
    assert resolve_switches("auto", "auto", torch.device("cpu")) == expected
    assert resolve_switches("32", False, torch.device("cpu")) == ("32", False)


def test_each_precision_mode_runs_the_attack_precision_its_name_says():
    assert {name: precision for name, (precision, _) in modes("cpu").items()} == {
        "fp32": "fp32", "bf16 step, auto": "auto", "bf16 step, fp32 attack": "fp32", "bf16 attack": "bf16"}


def test_the_probe_keeps_only_images_the_model_gets_right():
    model, x, y = probe_model(n_test=64)
    with torch.no_grad():
        assert 0 < len(y) < 64 and bool((model(x).argmax(1) == y).all())


def test_timed_steps_leave_the_warmup_out():
    from omegaconf import OmegaConf

    from batlit.tools.bench import time_methods
    from batlit.models import small_cnn

    cfg = OmegaConf.create({"methods": ["standard", "pgd_at"], "seed": 0, "warmup": 1, "repeats": 2,
                            "count_flops": False, "profile": False,
                            "attack": {"eps": 8 / 255, "train": {"steps": 1, "step_size": 2 / 255},
                                       "val": {"steps": 1, "step_size": 2 / 255},
                                       "test": {"steps": 1, "step_size": 2 / 255}},
                            "optimizer": {"name": "sgd", "lr": 0.01}})
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    [results] = time_methods(cfg, small_cnn(num_classes=4, width=2), x, y, torch.device("cpu"), [("32", False, False)])
    for entry in results.values():
        assert len(entry["times"]) == 2  # warmup + repeats steps ran, the first one is not timed
        assert entry["seconds_per_step"] == pytest.approx(sum(entry["times"]) / 2)  # the median of two


def test_the_record_s_ratios_are_the_timed_steps_ratios(tmp_path):
    from hydra import compose, initialize_config_dir

    from batlit.tools import bench
    from conftest import ROOT, with_hydra_runtime

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("bench", overrides=["methods=[pgd_at,bat]", "batch_size=4", "repeats=1", "warmup=0",
                                          "data.image_size=8", "model.width=2", "attack.train.steps=1",
                                          "count_flops=false", "precision=32", "channels_last=false",
                                          "device=cpu"], return_hydra_config=True)
    record = bench.run(with_hydra_runtime(cfg, tmp_path))
    seconds = {name: entry["seconds_per_step"] for name, entry in record["methods"].items()}
    assert record["ratios"] == {"bat_over_pgd_at": pytest.approx(seconds["bat"] / seconds["pgd_at"])}
