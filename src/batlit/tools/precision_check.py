"""How strong each training attack is, and how fast, in each precision: ``python -m batlit.tools.precision_check``.

Trains a small CNN for a few seconds on noisy 32x32 class prototypes (no data files), keeps the
test images it classifies right, and runs the TRADES attack (KL from x + 0.001·N(0, I)), BAT's
boundary trajectory (the same KL) and PGD-AT's attack (CE from a uniform start):

- ``fp32``: no autocast;
- ``bf16 step, auto``: inside bf16 autocast, as Lightning runs a ``bf16-mixed`` training step, with
  each attack's default ``precision=auto`` (for the KL attacks ``fp32_first``: the clean target and
  the first step in fp32, the rest in bf16);
- ``bf16 step, fp32 attack``: the same step with ``attack.train.precision=fp32``;
- ``bf16 attack``: the attack itself in bf16 (``attack.train.precision=bf16``, what every run did
  before ``precision`` existed);
- on a GPU also ``fp32 + TF32``: fp32 with cuDNN's TF32 convolutions (torch's default there).

It prints the share of images each attack misclassifies, BAT's share never misclassified within
the budget and its mean steps to the boundary, and seconds per attack. docs/performance.md,
"Precision of the attacks"; tests/attacks/test_attack_precision.py checks the same quantities.

``--ckpt PATH`` measures a trained batlit checkpoint instead of the probe: its model
(``batlit.checkpoint.load_run``: ``weights_only=True``, the stored config checked), the first
``--n-test`` images of its test split that it classifies right, and its own ε and training-attack
steps; on real images a weak attack shows as fewer flips, which the probe (every image a noisy
prototype) may not. ``--device`` (default: the GPU when there is one) is where the model, the
images and every method with its metrics run.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from ..checkpoint.store import datamodule_for, load_run
from ..config import ConfigError, exit_on_user_error, resolve_device
from ..methods import BAT, PGDAT, TRADES
from ..models import small_cnn
from ..safe_io import atomic_write_text

ATTACK = {"eps": 8 / 255, "train": {"steps": 10, "step_size": 2 / 255},
          "val": {"steps": 10, "step_size": 2 / 255}, "test": {"steps": 10, "step_size": 2 / 255}}
OPTIMIZER = {"name": "sgd", "lr": 0.05}


def probe_model(n_test: int = 512, device: str | torch.device = "cpu", seed: int = 0):
    """A small CNN trained for ~2 s and the test images it classifies right: ``(model, x, y)``."""
    torch.manual_seed(seed)
    protos = F.interpolate(torch.rand(10, 3, 4, 4), size=32, mode="bilinear", align_corners=False)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        return (protos[y] + 0.8 * torch.randn(n, 3, 32, 32)).clamp(0, 1), y

    model = small_cnn(num_classes=10, in_channels=3, width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x_train, y_train = sample(2048)
    for _ in range(2):
        for i in range(0, len(x_train), 128):
            loss = F.cross_entropy(model(x_train[i:i + 128]), y_train[i:i + 128])
            opt.zero_grad()
            loss.backward()
            opt.step()
    x, y = sample(n_test)
    model = model.to(device).eval()
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        right = model(x).argmax(1) == y
    return model, x[right], y[right]  # flips are then the attack's doing


def method(cls: type, model: torch.nn.Module, precision: str = "auto", *, device: str | torch.device | None = None,
           attack: dict[str, Any] | None = None, **kwargs: Any):
    """The method ``cls`` around ``model`` with the training attack in ``precision``; with ``device``
    moved there whole: the model and the method's own metrics (BAT's ``StepsToBoundary``, the
    evaluation metrics), whose states would otherwise stay on the CPU beside a GPU model."""
    attack = attack or ATTACK
    attack = {**attack, "train": {**attack["train"], "precision": precision}}
    built = cls(model, attack=attack, optimizer=OPTIMIZER, **kwargs)
    return built if device is None else built.to(device)


def trained_model(ckpt: str | Path, n_test: int = 512, device: str | torch.device = "cpu",
                  data_root: str | None = None):
    """A trained checkpoint's model, the first ``n_test`` test images it classifies right and the
    attack settings it trained with: ``(model, x, y, attack)``. Read through batlit.checkpoint's
    checked readers (``weights_only=True``; the stored config names none of the reader's code)."""
    run = load_run(ckpt)
    dm = datamodule_for(run.config, root=data_root, test_subset=n_test, eval_batch_size=256, num_workers=0)
    xs, ys = zip(*dm.test_dataloader())  # [0, 1] images, as evaluate's attacks see them
    x, y = torch.cat(xs).to(device), torch.cat(ys).to(device)
    model = run.model.to(device).eval()
    with torch.no_grad():
        right = model(x).argmax(1) == y
    stored = run.config.attack
    attack = {"eps": float(stored.eps), **{phase: {"steps": int(stored[phase].steps),
                                                   "step_size": float(stored[phase].step_size)}
                                           for phase in ("train", "val", "test")}}
    if stored.train.get("eps") is not None:  # linf_trades: the training attack's own radius
        attack["train"]["eps"] = float(stored.train.eps)
    return model, x[right], y[right], attack


@contextmanager
def _tf32(device_type: str) -> Iterator[None]:
    """cuDNN convolutions in TF32 (torch's default on a GPU) inside; nothing on the CPU."""
    if device_type != "cuda":
        yield
        return
    conv = torch.backends.cudnn.conv
    saved, conv.fp32_precision = conv.fp32_precision, "tf32"
    try:
        yield
    finally:
        conv.fp32_precision = saved


def modes(device_type: str) -> dict[str, tuple[str, Any]]:
    """name -> (attack precision, context around the step)."""
    bf16 = lambda: torch.autocast(device_type, dtype=torch.bfloat16)  # noqa: E731
    out = {"fp32": ("fp32", nullcontext), "bf16 step, auto": ("auto", bf16),
           "bf16 step, fp32 attack": ("fp32", bf16), "bf16 attack": ("bf16", bf16)}
    if device_type == "cuda":  # precision=inherit of fp32: whatever TF32 setting surrounds it
        out["fp32 + TF32"] = ("inherit", lambda: _tf32(device_type))
    return out


def run(device: str = "cpu", n_test: int = 512, repeats: int = 1, ckpt: str | Path | None = None,
        data_root: str | None = None) -> dict[str, Any]:
    if ckpt is None:
        model, x, y = probe_model(n_test, device)
        attack = ATTACK
    else:
        model, x, y, attack = trained_model(ckpt, n_test, device, data_root)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    results: dict[str, Any] = {"device": str(device), "n_images": len(y), "attacks": {},
                               "model": "probe" if ckpt is None else str(ckpt), "attack": attack}
    for attack_name, cls in (("trades", TRADES), ("bat", BAT), ("pgd_at", PGDAT)):
        for mode, (precision, context) in modes(torch.device(device).type).items():
            if attack_name == "pgd_at" and mode in ("fp32 + TF32", "bf16 step, fp32 attack"):
                continue
            m = method(cls, model, precision, device=device, attack=attack)
            seconds = []
            for _ in range(repeats):
                torch.manual_seed(1)
                m.steps_to_boundary.reset() if attack_name == "bat" else None
                sync()
                start = time.perf_counter()
                with context():
                    examples = m.perturb(x, y)
                sync()
                seconds.append(time.perf_counter() - start)
            entry: dict[str, Any] = {"seconds": min(seconds)}
            if attack_name == "bat":
                stats = m.steps_to_boundary.compute()
                entry.update(never_misclassified=float(stats["never"]), mean_steps=float(stats["mean"]))
            else:
                with torch.no_grad():
                    entry["misclassified"] = float((model(examples).argmax(1) != y).float().mean())
            results["attacks"].setdefault(attack_name, {})[mode] = entry
            shown = (f"never misclassified {entry['never_misclassified']:.3f}, mean steps {entry['mean_steps']:.2f}"
                     if attack_name == "bat" else f"misclassified {entry['misclassified']:.3f}")
            print(f"{attack_name:<7} {mode:<23} {shown:<48} {entry['seconds']:.3f} s", flush=True)
    return results


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m batlit.tools.precision_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1, ...")
    parser.add_argument("--n-test", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per attack (the fastest is kept)")
    parser.add_argument("--ckpt", type=Path, help="a trained batlit checkpoint instead of the probe")
    parser.add_argument("--data-root", help="with --ckpt: where its data is, when not where it was trained")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.n_test < 1 or args.repeats < 1:
        raise ConfigError(f"--n-test and --repeats must be >= 1, got {args.n_test} and {args.repeats}")
    device = resolve_device(args.device)  # one line for a device that is not there, before any work
    if args.ckpt is not None and not args.ckpt.is_file():
        raise ConfigError(f"--ckpt: no checkpoint file at '{args.ckpt}'")
    results = run(str(device), args.n_test, args.repeats, args.ckpt, args.data_root)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(results, indent=2))


def main(argv: list[str] | None = None) -> None:
    exit_on_user_error(_main, argv)


if __name__ == "__main__":
    main()
