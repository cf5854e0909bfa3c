"""batlit's ``attack=autoattack`` against the authors' AutoAttack run directly: speed and equality.

    python scripts/aa_compare.py --ckpt outputs/train/runs/<run>/checkpoints/last.ckpt --n-samples 450

On one process, the same model and the same test images, it alternates batlit's path
(``build_attack`` + ``evaluate``, what ``python -m batlit.evaluate attack=autoattack`` runs, BatchNorm
folded) and ``pyautoattack.AutoAttack(model, norm="Linf", eps=..., version=..., seed=...)
.run_standard_evaluation`` on the model as trained, ``--repeats`` times each (batlit first on even
repeats, the original first on odd ones, so that a busy machine slows both alike). It prints images
per second for each and whether the counts of robust images per class after every component are identical.

Identical needs the same images in each ``perturb`` call: the original batches the images still
robust across the whole set, batlit batch by batch of the test loader, so the two agree call for
call only when one batch holds every image (``--batch-size`` defaults to ``--n-samples``). With
smaller batches both are the original attack, but the random draws fall differently.
Everything runs in fp32. ``--out FILE`` writes everything as JSON. docs/performance.md, docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _original(model, x, y, eps: float, version: str, seed: int, batch_size: int, num_classes: int):
    """The authors' run_standard_evaluation; the robust flags after each attack, read off its state."""
    import torch
    from pyautoattack import AutoAttack
    from pyautoattack.state import EvaluationState

    after: dict[str, list[int]] = {}
    add = EvaluationState.add_run_attack

    def record(state, attack):
        after[attack] = torch.bincount(y[state.robust_flags], minlength=num_classes).tolist()
        add(state, attack)

    EvaluationState.add_run_attack = record
    try:
        aa = AutoAttack(model, norm="Linf", eps=eps, version=version, seed=seed, device=x.device)
        aa.verbose = False
        start = time.perf_counter()
        aa.run_standard_evaluation(x, y, batch_size=batch_size)
        seconds = time.perf_counter() - start
    finally:
        EvaluationState.add_run_attack = add
    return seconds, [after.get(a) for a in aa.attacks_to_run]


def _batlit(model, x, y, eps: float, version: str, seed: int, batch_size: int, num_classes: int):
    import torch
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader, TensorDataset

    from batlit.evaluate import build_attack, evaluate

    start = time.perf_counter()
    components = build_attack(OmegaConf.create({"kind": "autoattack", "version": version}), model, eps,
                              num_classes, seed)
    out = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=batch_size), components, num_classes,
                   x.device, progress=False)
    seconds = time.perf_counter() - start
    counts = out["results"]["count_per_class"].tolist()
    per_component = [[round(f * n) for f, n in zip(per_class, counts)] for _, per_class, _ in out["robust_after"]]
    return seconds, per_component, [name for name, _, _ in out["robust_after"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a batlit checkpoint (checkpoints/last.ckpt of a run)")
    p.add_argument("--n-samples", type=int, default=None, help="test images (seeded, stratified); default all")
    p.add_argument("--batch-size", type=int, default=None, help="default: all images in one batch")
    p.add_argument("--eps", type=float, default=None, help="default: the run's attack.eps")
    p.add_argument("--version", default="standard", choices=["standard", "plus", "rand"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    args = p.parse_args(argv)
    if args.repeats < 1 or (args.n_samples is not None and args.n_samples < 1):
        p.error("--repeats and --n-samples must be >= 1")

    import torch

    from batlit.checkpoint.store import datamodule_for, load_run
    from batlit.models.fold import set_batchnorm_folding
    from batlit.safe_io import atomic_write_text

    trained = load_run(args.ckpt)
    model = set_batchnorm_folding(trained.model.eval(), True)
    K = len(trained.class_names)
    eps = float(args.eps if args.eps is not None else trained.config.attack.eps)
    dm = datamodule_for(trained.config, test_subset=args.n_samples, eval_batch_size=args.n_samples or 100_000,
                        num_workers=0)
    batches = list(dm.test_dataloader())
    x = torch.cat([b[0] for b in batches]).cpu()
    y = torch.cat([b[1] for b in batches]).cpu()
    n, bs = len(y), args.batch_size or len(y)
    print(f"{n} test images, eps={eps:.4g}, AutoAttack {args.version}, seed {args.seed}, batch size {bs}, "
          f"{torch.get_num_threads()} threads; {args.repeats} repeat(s), interleaved", flush=True)

    runs: list[dict] = []
    for r in range(args.repeats):
        order = ("batlit", "original") if r % 2 == 0 else ("original", "batlit")
        for who in order:
            if who == "batlit":
                seconds, counts, names = _batlit(model, x, y, eps, args.version, args.seed, bs, K)
            else:
                set_batchnorm_folding(model, False)  # the original attacks the model as trained
                try:
                    seconds, counts = _original(model, x, y, eps, args.version, args.seed, bs, K)
                finally:
                    set_batchnorm_folding(model, True)
            runs.append({"who": who, "repeat": r, "seconds": round(seconds, 2),
                         "images_per_s": round(n / seconds, 3), "robust_per_class": counts})
            print(f"  repeat {r} {who:<8} {seconds:8.1f} s  {n / seconds:7.3f} images/s  "
                  f"robust after each component: {[sum(c) for c in counts]}", flush=True)
        pair = [run["robust_per_class"] for run in runs if run["repeat"] == r]
        print(f"  repeat {r}: per-class robust counts after every component identical: {pair[0] == pair[1]}",
              flush=True)

    def of(who):
        return [run for run in runs if run["who"] == who]

    reference = of("original")[0]["robust_per_class"]
    identical = {who: all(run["robust_per_class"] == reference for run in of(who))
                 for who in ("batlit", "original")}
    best = {who: min(run["seconds"] for run in of(who)) for who in identical}
    summary = {"ckpt": str(args.ckpt), "n_samples": n, "eps": eps, "version": args.version, "seed": args.seed,
               "batch_size": bs, "threads": torch.get_num_threads(), "components": names, "runs": runs,
               "identical_to_original": identical, "best_seconds": best,
               "best_images_per_s": {who: round(n / s, 3) for who, s in best.items()}}
    print(f"\ncomponents: {' → '.join(names)}")
    for who in identical:
        print(f"  {who:<12} best of {len(of(who))}: {best[who]:8.1f} s = {n / best[who]:7.3f} images/s; "
              f"per-class robust counts after every component identical to the original's: {identical[who]}")
    print(f"  batlit / original speed (best of each): {best['original'] / best['batlit']:.2f}x")
    if args.out:
        atomic_write_text(args.out, json.dumps(summary, indent=2))
        print(f"written to {args.out}")
    return 0 if identical["batlit"] else 1


if __name__ == "__main__":
    sys.exit(main())
