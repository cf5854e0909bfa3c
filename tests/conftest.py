"""Shared test helpers: run the real CLI in a subprocess, find the shared CIFAR-10 JPEG copy, compose
the training config in-process, trap hidden host read-backs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR10_JPEG = ROOT.parent / "shared" / "data" / "cifar10-jpeg"

# A tiny, fast run: synthetic data, small CNN, 2-step attacks, CPU.
TINY = [
    "data=synthetic", "model=small_cnn", "trainer=cpu", "epochs=1",
    "attack.train.steps=2", "attack.val.steps=2", "attack.test.steps=2",
    "trainer.enable_progress_bar=false",
]


def run_cli(module: str, *args: str, cwd: Path | None = None, timeout: int = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0", **(env or {})}
    env.pop("WANDB_MODE", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def train(run_dir: Path, *overrides: str, tiny: bool = True) -> dict:
    """Train through the CLI into run_dir and return its metrics.json."""
    proc = run_cli("batlit.train", *(TINY if tiny else []), *overrides, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def with_hydra_runtime(cfg, output_dir: str | Path = "/tmp/batlit-compose"):
    """A config composed with ``return_hydra_config=True``, made what an entry point sees at run
    time: HydraConfig set (output folder, choices) and the ``hydra`` node removed."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def shared_cifar10_jpeg() -> Path:
    if not (SHARED_CIFAR10_JPEG / "train.zip").is_file():
        pytest.skip(f"real CIFAR-10 JPEG copy not found at {SHARED_CIFAR10_JPEG} (../shared/data/cifar10-jpeg "
                    "beside the checkout); it is never part of the repo")
    return SHARED_CIFAR10_JPEG


def train_multirun(sweep_dir: Path, *overrides: str, tiny: bool = True) -> list[dict]:
    """``python -m batlit.train -m ...`` into sweep_dir (one process for every point); metrics.json per job."""
    proc = run_cli("batlit.train", "-m", *(TINY if tiny else []), *overrides, f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [json.loads((job / "metrics.json").read_text()) for job in jobs]


@pytest.fixture(scope="session")
def hot_start(tmp_path_factory) -> Path:
    """One tiny PGD-AT run with a validation split, trained once per session through the CLI:
    the checkpoint FRL fine-tunes, and the one the checkpoint and resume checks read."""
    run_dir = tmp_path_factory.mktemp("hot_start")
    train(run_dir, "method=pgd_at", "data.val_size=40")
    return run_dir


def linear_model(k: int = 4):
    """A seeded linear classifier of 3x4x4 images into k classes: the method tests' smallest model."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, k))
    model.num_classes = k
    return model


def compose_config(*overrides: str):
    """The training config composed in-process with these overrides, as an entry point sees it."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="batlit.conf", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    return with_hydra_runtime(cfg)


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy", "nonzero")


@pytest.fixture
def no_hidden_reads(monkeypatch):
    """Make every host read-back raise unless batlit.sync is making it."""
    import torch
    from torch import Tensor

    from batlit import sync

    def trap(name, original):
        def guarded(self, *args, **kwargs):
            if not sync.inside() and self.numel() > 0:
                raise AssertionError(f"a host read-back ({name}) inside a training step")
            return original(self, *args, **kwargs)
        return guarded

    for name in HOST_READS:
        monkeypatch.setattr(Tensor, name, trap(name, getattr(Tensor, name)))
    original_getitem = Tensor.__getitem__

    def getitem(self, index):
        if isinstance(index, Tensor) and index.dtype == torch.bool and not sync.inside():
            raise AssertionError("a boolean-mask index (its size is a host read) inside a training step")
        return original_getitem(self, index)

    monkeypatch.setattr(Tensor, "__getitem__", getitem)
    original_nonzero = torch.nonzero
    monkeypatch.setattr(torch, "nonzero", lambda t, *a, **k: (_ for _ in ()).throw(
        AssertionError("torch.nonzero inside a training step")) if not sync.inside() else original_nonzero(t, *a, **k))
