"""conf/experiment/study2_<scale>_<run>.yaml: each run of scripts/study_round2.sh is a named experiment.

The script used to pass these settings on the command line and to rescale the epoch-counted ones in
inline Python. Each experiment must compose to exactly the config that command line composed, the
rescaled values computed here by the script's former rule from the scale's epochs and lr.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
SCALES = {"small": "study_cifar10_cpu", "large": "study_cifar10_cpu_large"}


def at(e: int, t: int, n: int) -> int:
    """The script's former ``at E T N``: the authors' epoch E of T scaled to N epochs (Python's round)."""
    return max(1, min(n, round(e * n / t)))


def former_overrides(run: str, epochs: int, lr: float) -> list[str]:
    """The command line study_round2.sh gave each run before the named experiments (FT_LR = LR / 10)."""
    ft_lr = f"{lr / 10}"  # the script printed $LR / 10 with Python
    frl = ["method=frl_rwrm", "epochs=4", "scheduler=constant", "optimizer.lr=0.005", "method.halve_every=2"]
    return {
        "cfa": ["method=cfa", f"method.begin={at(10, 200, epochs)}"],
        "wat": ["method=wat"],
        "dafa": ["method=dafa", f"method.warmup_epoch={at(70, 110, epochs)}"],
        "faal_at": ["method=faal", "method.base=pgd_at", "epochs=2", f"optimizer.lr={ft_lr}", "scheduler.milestones=[2]"],
        "faal_trades": ["method=faal", "method.base=trades", "epochs=2", f"optimizer.lr={ft_lr}",
                        "scheduler.milestones=[2]"],
        "frl_tau005": frl[:1] + ["method.bound=0.05"] + frl[1:],
        "frl_tau007": frl[:1] + ["method.bound=0.07"] + frl[1:],
        "frl_trades": frl[:1] + ["method.bound=0.05"] + frl[1:],
    }[run]


@pytest.fixture(scope="module")
def _hydra():
    with initialize_config_module(config_module="batlit.conf", version_base="1.3"):
        yield


def _compose(*overrides: str) -> dict:
    return OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=False)


RUNS = ["cfa", "wat", "dafa", "faal_at", "faal_trades", "frl_tau005", "frl_tau007", "frl_trades"]


def test_every_study2_experiment_is_checked_here():
    found = sorted(p.name for p in files("batlit.conf").joinpath("experiment").iterdir()
                   if p.name.startswith("study2_"))
    assert found == sorted(f"study2_{scale}_{run}.yaml" for scale in SCALES for run in RUNS)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("run", RUNS)
def test_experiment_composes_as_the_former_command_line(scale, run, _hydra):
    base = _compose(f"experiment={SCALES[scale]}")
    former = _compose(f"experiment={SCALES[scale]}", *former_overrides(run, base["epochs"], base["optimizer"]["lr"]))
    named = _compose(f"experiment=study2_{scale}_{run}")
    assert named == former
    rescaled = {"cfa": ("method", "begin"), "dafa": ("method", "warmup_epoch"), "faal_at": ("optimizer", "lr"),
                "faal_trades": ("optimizer", "lr")}
    if run in rescaled:  # the value the inline Python computed, and a change from the scale's experiment
        group, key = rescaled[run]
        assert named[group][key] == former[group][key] != base[group].get(key)


def test_the_script_names_them_and_rescales_nothing_inline():
    script = (ROOT / "scripts" / "study_round2.sh").read_text()
    assert "EXPERIMENT=study2_${SCALE}_" in script
    assert not re.search(r'"\$PY" -c', script)  # no inline Python left
