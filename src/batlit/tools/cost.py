"""What a run will cost, said before it starts: one timed probe of the real training step.

``python -m batlit.train method=bat data=cifar10_jpeg`` on a 2-core CPU trains ResNet-18 for 110
epochs; without a word it would sit in Lightning's sanity check for minutes. :func:`estimate`
times the method's own training step (attack, objective, backward) and its validation and test
attacks on a few training images, on a copy of the method (the run's weights, BatchNorm
statistics and random streams are untouched), under the run's precision, and scales per image.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from typing import Any

import torch

#: Above this many hours on a CPU, the line points to the CPU study preset and to a GPU.
LONG_CPU_RUN_HOURS = 2.0
PROBE_IMAGES = 16


def _timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def estimate(method: Any, datamodule: Any, device: torch.device, precision: str, epochs: int,
             val_every: int = 1, world_size: int = 1, test: bool = True, trainer: Any = None) -> dict[str, float]:
    """Seconds per training epoch, per validation and for the whole run, from a timed probe.

    The probe runs each piece twice on ``PROBE_IMAGES`` training images and keeps the second time
    (the first pays one-off kernel selection). Small batches cost more per image than the run's,
    so the estimate errs long. A method that reads the validation split while training (FRL:
    ``attack.test`` on the whole split before every epoch) has that pass counted in each epoch.
    ``trainer``, when given, is attached to the copy for methods that read its settings (GAIRAT's
    λ schedule reads ``max_epochs``).
    """
    x = datamodule.train_x[:PROBE_IMAGES].to(device).float().div_(255)
    y = datamodule.train_y[:PROBE_IMAGES].to(device)
    n = len(x)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if "bf16" in precision
                else torch.autocast(device.type, dtype=torch.float16) if "16" in precision else nullcontext())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    probe = copy.deepcopy(method).to(device)
    if trainer is not None:
        probe.trainer = trainer
    probe.model.train()

    def train_step() -> None:
        with autocast:
            loss = probe.objective(x, y, probe.perturb(x, y))["loss"]
        loss.backward()
        probe.model.zero_grad(set_to_none=True)

    def attack(phase: str):
        def run() -> None:
            with autocast:
                probe._robustness_step((x, y), phase) if phase == "val" else probe.test_step((x, y), 0)
        return run

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        per_image = {}
        for name, fn in (("train", train_step), ("val", attack("val")), ("test", attack("test"))):
            fn()
            per_image[name] = _timed(fn, sync) / n
    n_train = len(datamodule.train_x) / world_size
    n_val = (len(datamodule.val_x) if datamodule.val_x is not None else 0) / world_size
    n_test = len(datamodule.test_x) / world_size if test else 0
    train_epoch = per_image["train"] * n_train
    if getattr(method, "needs_val_split", False):  # FRL's per-epoch pass over the whole split (every rank)
        train_epoch += per_image["test"] * n_val * world_size
    val_pass = per_image["val"] * n_val
    total = epochs * train_epoch + (epochs // max(1, val_every)) * val_pass + per_image["test"] * n_test
    return {"train_epoch_s": train_epoch, "val_s": val_pass, "total_s": total}


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cost_line(est: dict[str, float], epochs: int, device: torch.device, what: str) -> str:
    """The one line printed when a run starts."""
    line = (f"batlit: estimated {_span(est['train_epoch_s'])} per training epoch, "
            f"{_span(est['total_s'])} for the whole run ({epochs} epochs, validation and test included; {what})")
    if device.type == "cpu" and est["total_s"] > LONG_CPU_RUN_HOURS * 3600:
        line += (f". That is {math.ceil(est['total_s'] / 3600)} h on this CPU: experiment=study_cifar10_cpu "
                 "is the CPU-sized protocol (a small CNN, minutes per run), or train on a GPU (trainer=gpu)")
    return line
