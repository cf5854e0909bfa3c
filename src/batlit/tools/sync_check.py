"""Host syncs per training step of each method: ``python -m batlit.tools.sync_check [--device cuda]``.

For every method, one warm-up step, then one counted training step (attack, objective, backward,
SGD step) on a small CNN and a batch of random images (128 of 32×32 by default) on the device:

- ``batlit.sync``: the deliberate reads batlit makes (:mod:`batlit.sync`);
- on a GPU, ``cuda``: the synchronizing CUDA calls torch itself sees
  (``torch.cuda.set_sync_debug_mode("warn")``), whoever makes them. More CUDA syncs than
  deliberate reads points at a hidden read-back (tests/methods/test_host_syncs.py traps those on the CPU).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import sync
from ..methods.registry import sync_check_cases
from ..models import small_cnn

K = 10
ATTACK = {"eps": 8 / 255, "train": {"steps": K, "step_size": 2 / 255}, "val": {"steps": K, "step_size": 2 / 255},
          "test": {"steps": K, "step_size": 2 / 255}}
OPTIMIZER = {"name": "sgd", "lr": 0.01, "momentum": 0.9}


def methods() -> dict[str, tuple[type, dict[str, Any]]]:
    """Every case each method class declares in ``sync_checks`` (batlit.methods.registry)."""
    return sync_check_cases()


def _step(method: Any, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    examples = method.perturb(x, y)
    loss = method.objective(x, y, examples)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def run(device: str = "cpu", batch: int = 128, size: int = 32) -> dict[str, Any]:
    from lightning.pytorch import LightningModule

    dev = torch.device(device)
    on_cuda = dev.type == "cuda"
    results: dict[str, Any] = {"device": str(dev), "attack_steps": K, "methods": {}}
    # past every warm-up (DAFA's, CFA's): the class-wise budgets act
    original = LightningModule.current_epoch
    LightningModule.current_epoch = property(lambda self: 1)  # type: ignore[assignment]
    try:
        for name, (cls, kwargs) in methods().items():
            torch.manual_seed(0)
            model = small_cnn(num_classes=10, in_channels=3, width=16).to(dev)
            method = cls(model, attack=ATTACK, optimizer=OPTIMIZER, **kwargs).to(dev)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            x = torch.rand(batch, 3, size, size, device=dev)
            y = torch.arange(batch, device=dev) % 10
            _step(method, optimizer, x, y)  # warm-up: lazy initialisation is not a per-step cost
            if on_cuda:
                torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught, sync.counting() as found:
                warnings.simplefilter("always")
                if on_cuda:
                    torch.cuda.set_sync_debug_mode("warn")
                try:
                    _step(method, optimizer, x, y)
                finally:
                    if on_cuda:
                        torch.cuda.set_sync_debug_mode("default")
            entry: dict[str, Any] = {"batlit.sync": dict(found)}
            if on_cuda:
                entry["cuda"] = sum("synchroniz" in str(w.message) for w in caught)
            results["methods"][name] = entry
            print(f"{name:<11} batlit.sync {sum(found.values()):>3} {dict(found)}"
                  + (f"   cuda syncs {entry['cuda']}" if on_cuda else ""), flush=True)
    finally:
        LightningModule.current_epoch = original  # type: ignore[assignment]
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m batlit.tools.sync_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = run(args.device, args.batch, args.size)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
