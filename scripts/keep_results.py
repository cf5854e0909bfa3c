"""Keep a finished study run's small result files in the repository, so a study outlives the machine.

A study's run folders (checkpoints, logs) live under outputs/, which no session keeps. This copies
what the reports read, and nothing else, into a tracked folder:

    metrics.json  config.yaml  csv/metrics.csv  eval_*.json

With ``--per-image`` (study round 3) also each evaluation's per-image outcomes, ``eval_*.npz``; and
with ``--weights`` (study round 3), ``weights.pt``: the run's final weights alone, the weights its
reports and evaluations measured (the trained model, or CFA's averaged one), as a state dict read from
``checkpoints/last.ckpt`` with ``weights_only=True`` and saved without the optimizer, the callbacks or
anything else, so any later evaluation needs no retraining:

    import torch, yaml
    from omegaconf import OmegaConf
    from batlit.checkpoint.store import build_model
    config = OmegaConf.create(yaml.safe_load(open("config.yaml")))  # the kept config: the model section
    model = build_model(config)
    model.load_state_dict(torch.load("weights.pt", weights_only=True))

Checkpoints (with their optimizer state) are never kept. Absolute paths of this machine inside them (the repository root, the study folder) are rewritten as
paths relative to the repository, so the kept files name no machine. A run already kept is not
overwritten: its test metrics are compared with the new copy's instead (a base model retrained on
the CPU to fine-tune from must reproduce the kept one), and the comparison is printed.

    python scripts/keep_results.py outputs/study_round2_small/pgd_at/seed0 results/round2/small/pgd_at/seed0
    python scripts/keep_results.py --per-image --weights outputs/study_round3/cfa/seed0 results/round3/cfa/seed0
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("metrics.json", "config.yaml", "csv/metrics.csv")  # the CSV: per-epoch times for the cost table
COMPARED = ("std_per_class", "rob_per_class", "bndy_per_class")
WEIGHTS = "weights.pt"
MAX_WEIGHTS_BYTES = 1 << 20  # the study's CNNs are well under 1 MB: a larger file is a mistake, not kept
MAX_CKPT_BYTES = 256 << 20   # read no checkpoint larger than this
MAX_NPZ_BYTES = 64 << 20     # per-image outcomes of at most a few hundred thousand images


def final_weights(ckpt: Path) -> bytes:
    """The reported model's state dict of ``ckpt`` (a batlit checkpoint), serialised by torch.save:
    tensors only. Which weights: ``batlit.reported_weights`` (``model``, or CFA's ``averaged_model``),
    as batlit.checkpoint.load_run reads them."""
    import torch

    from batlit.safe_io import read_regular_bytes

    data = read_regular_bytes(ckpt, inside=ckpt.parent, max_bytes=MAX_CKPT_BYTES)
    stored = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    reported = stored.get("batlit", {}).get("reported_weights", "model")
    if reported not in ("model", "averaged_model"):
        raise SystemExit(f"keep_results: '{ckpt}' names reported weights {reported!r}")
    prefix = f"{reported}."
    state = {k[len(prefix):]: v.detach().clone().contiguous() for k, v in stored.get("state_dict", {}).items()
             if k.startswith(prefix)}
    if not state:
        raise SystemExit(f"keep_results: '{ckpt}' holds no {reported} weights")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    if buffer.tell() > MAX_WEIGHTS_BYTES:
        raise SystemExit(f"keep_results: the weights of '{ckpt}' take {buffer.tell()} bytes, more than "
                         f"{MAX_WEIGHTS_BYTES}: not kept (the study's models are well under 1 MB)")
    return buffer.getvalue()


def relative_text(text: str, roots: list[Path]) -> str:
    """text with each absolute root (longest first) replaced by its path relative to the repository."""
    for root in sorted((r for r in roots if len(r.parts) > 1), key=lambda p: len(str(p)), reverse=True):
        try:
            rel = root.relative_to(ROOT).as_posix() or "."
        except ValueError:
            rel = root.name
        text = text.replace(str(root), rel)
    return text


def keep(src: Path, dst: Path, weights: bool = False, per_image: bool = False) -> str:
    """Copy src's result files into dst (see the module's docstring); ``per_image``: the eval_*.npz
    too; ``weights``: weights.pt too."""
    from batlit.safe_io import atomic_write_bytes, atomic_write_text, read_regular_bytes

    src, dst = src.resolve(), dst.resolve()
    if not (src / "metrics.json").is_file():
        raise SystemExit(f"keep_results: no metrics.json in '{src}'")
    roots = [ROOT, src.parent.parent]  # the repository, and the study folder (OUT/METHOD/seedN) wherever it is
    ckpt = src / "checkpoints" / "last.ckpt"
    if weights and not ckpt.is_file():
        raise SystemExit(f"keep_results: --weights and no checkpoint at '{ckpt}'")
    binary = ([p.name for p in sorted(src.glob("eval_*.npz"))] if per_image else []) + ([WEIGHTS] if weights else [])
    if (dst / "metrics.json").is_file():
        kept = json.loads((dst / "metrics.json").read_text())
        new = json.loads((src / "metrics.json").read_text())
        same = all(kept.get(k) == new.get(k) for k in COMPARED)
        verdict = "reproduced" if same else "DIFFERS from"
        # the new model's files join the kept ones only when it is the kept model, and never replace one
        names = [n for n in [*KEPT, *(p.name for p in sorted(src.glob("eval_*.json"))), *binary]
                 if same and ((src / n).is_file() or n == WEIGHTS) and not (dst / n).is_file()]
    else:
        verdict = "kept"
        names = [n for n in KEPT if (src / n).is_file()] + [p.name for p in sorted(src.glob("eval_*.json"))] + binary
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        if name == WEIGHTS:
            atomic_write_bytes(dst / name, final_weights(ckpt))
        elif name.endswith(".npz"):  # per-image outcomes: no path inside, copied as they are
            atomic_write_bytes(dst / name, read_regular_bytes(src / name, inside=src, max_bytes=MAX_NPZ_BYTES))
        else:
            atomic_write_text(dst / name, relative_text((src / name).read_text(), roots))
    shown = dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst
    if verdict == "kept" or not names:
        return f"{verdict} {shown}"
    return f"kept {shown} (+{', '.join(names)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a finished run folder (metrics.json inside)")
    parser.add_argument("dst", type=Path, help="the tracked folder to keep it in")
    parser.add_argument("--weights", action="store_true",
                        help="also keep the final weights (weights.pt, from checkpoints/last.ckpt)")
    parser.add_argument("--per-image", action="store_true", help="also keep the per-image outcomes (eval_*.npz)")
    args = parser.parse_args(argv)
    print(keep(args.src, args.dst, args.weights, args.per_image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
