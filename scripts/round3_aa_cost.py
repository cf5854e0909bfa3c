"""What the original AutoAttack costs per image on a model of study round 3's scale, and how many
class-balanced images the study's evaluations can afford (docs/results_round3.md, "The AutoAttack subset").

AutoAttack attacks each image with a component only while it is still robust (APGD-CE the clean-correct
images, APGD-T those APGD-CE left, then FAB-T, then Square), so its cost depends on the model's robust
accuracy, not only on the architecture. This script therefore measures, in one process on one model,
each component's seconds per image it attacks (wall and CPU time), by running batlit.evaluate's own loop
with each component wrapped in a timer; and PGD-20 on the same images, to compare this machine with the
one of study round 2. It then extrapolates to trained models from the fractions round 2's kept
large-scale evaluations reached (eval_autoattack.json: clean accuracy, robust accuracy after each
component). Those were torchattacks' 10-iteration variant, which leaves more images robust than the
original: the extrapolation overstates the attacked images, so the size it gives errs on the safe side.

    python scripts/round3_aa_cost.py outputs/round3_aa_cost/pgd_at/checkpoints/last.ckpt \\
        --reference results/round2/large --runs 27 --hours 6 --out outputs/round3_aa_cost/aa_cost.json
    python scripts/round3_aa_cost.py --measured outputs/round3_aa_cost/aa_cost.json --hours 8   # again, no measuring

Machines: the extrapolation is given for this machine; for the machine that ran the reference, twice:
scaled by the ratio of PGD-20's seconds per image here to the reference's kept eval_pgd20.json; and
from the reference's own kept AutoAttack seconds (torchattacks' variant: 10 iterations of APGD-CE,
APGD-T and FAB-T, the same Square), each run's times the original/variant cost ratio measured here
for its fractions (each component's cost proportional to its iterations). The second uses the
reference machine's own attack times, small batches included, and is the one the study's size uses.

The short model it is meant for: experiment=study_cifar10_cpu_large trained a few epochs
(docs/results_round3.md gives the command). Prints one JSON object; --out writes it too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("APGD-CE", "APGD-T", "FAB-T", "Square")  # the standard version's order


class Timed:
    """A component that counts the images it is given and the wall and CPU seconds it takes."""

    def __init__(self, attack) -> None:
        self.attack, self.images, self.wall, self.cpu = attack, 0, 0.0, 0.0

    def __call__(self, x, y):
        wall, cpu = time.perf_counter(), time.process_time()
        out = self.attack(x, y)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.images += len(y)
        return out


def reference_fractions(folder: Path) -> list[dict[str, float]]:
    """Per kept run of ``folder``: the fraction of images each component attacks (the clean-correct
    ones for APGD-CE, then those robust after the component before) and its seconds per 1,000 images."""
    out = []
    for path in sorted(folder.glob("*/seed*/eval_autoattack.json")):
        record = json.loads(path.read_text())
        after = {c["name"]: c["robust_acc"] for c in record["components"]}
        if [c["name"] for c in record["components"]] != list(COMPONENTS):
            continue
        attacked = [1 - record["std_avg"]] + [after[c] for c in COMPONENTS[:-1]]
        out.append({"run": f"{path.parent.parent.name}/{path.parent.name}",
                    **{c: a for c, a in zip(COMPONENTS, attacked)},
                    "seconds_per_1000": 1000 * record["seconds"] / record["n_samples"]})
    return out


def per_image_cost(seconds_per_attacked: dict[str, float], fractions: dict[str, float]) -> float:
    """Seconds per evaluated image: each component's seconds per attacked image times the fraction of
    the images it attacks."""
    return sum(seconds_per_attacked[c] * fractions[c] for c in COMPONENTS)


# torchattacks' variant (round 2's attack=autoattack) against the original: its APGD-CE, APGD-T and FAB-T
# run 10 iterations instead of 100 (the same targets), its Square the same 5,000 queries
VARIANT_SHARE = {"APGD-CE": 0.1, "APGD-T": 0.1, "FAB-T": 0.1, "Square": 1.0}


def original_over_variant(seconds_per_attacked: dict[str, float], fractions: dict[str, float]) -> float:
    """How many times the original's cost the variant's is on a model with these fractions, each
    component's cost taken as proportional to its iterations."""
    return per_image_cost(seconds_per_attacked, fractions) / sum(
        seconds_per_attacked[c] * fractions[c] * VARIANT_SHARE[c] for c in COMPONENTS)


def affordable(per_image: float, runs: int, hours: float, classes: int = 10) -> int:
    """The largest class-balanced subset (a multiple of ``classes``) whose evaluation of ``runs`` models
    fits ``hours`` at ``per_image`` seconds each."""
    return int(hours * 3600 / (runs * per_image) // classes * classes)


def measure(ckpt: Path, n_samples: int, batch_size: int, eval_seed: int) -> dict:
    import torch
    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT / "src"))
    from batlit.checkpoint.store import datamodule_for, load_run
    from batlit.evaluate import build_attack, evaluate
    from batlit.models.fold import set_batchnorm_folding

    trained = load_run(ckpt)
    torch.manual_seed(0)
    eps = float(trained.config.attack.eps)
    dm = datamodule_for(trained.config, test_subset=n_samples, eval_seed=eval_seed, eval_batch_size=batch_size,
                        num_workers=0)
    model = set_batchnorm_folding(trained.model, True)
    K = len(trained.class_names)
    spec = OmegaConf.create({"kind": "autoattack", "version": "standard"})
    timed = [(name, Timed(a)) for name, a in build_attack(spec, model, eps, K, 0)]
    load_before = os.getloadavg()
    wall, cpu = time.perf_counter(), time.process_time()
    out = evaluate(model, dm.test_dataloader(), timed, K, torch.device("cpu"), progress=False, seed=0)
    aa_wall, aa_cpu = time.perf_counter() - wall, time.process_time() - cpu
    pgd = OmegaConf.create({"kind": "pgd", "loss": "ce", "steps": 20, "step_size": None, "restarts": 1})
    wall = time.perf_counter()
    evaluate(model, dm.test_dataloader(), build_attack(pgd, model, eps, K, 0), K, torch.device("cpu"),
             progress=False, seed=0)
    pgd_wall = time.perf_counter() - wall
    n = len(out["label"])
    return {
        "ckpt": str(ckpt), "n_samples": n, "batch_size": batch_size, "eval_seed": eval_seed,
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "loadavg_before": [round(v, 2) for v in load_before], "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "clean_acc": float((out["clean_pred"] == out["label"]).float().mean()),
        "robust_after": {name: r for name, _, r in out["robust_after"]},
        "components": {name: {"images": t.images, "wall_s": round(t.wall, 2), "cpu_s": round(t.cpu, 2),
                              "wall_s_per_image": t.wall / max(t.images, 1)} for name, t in timed},
        "autoattack_wall_s": round(aa_wall, 2), "autoattack_cpu_s": round(aa_cpu, 2),
        "pgd20_wall_s_per_image": pgd_wall / n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", type=Path, help="a checkpoint of the study's architecture (last.ckpt)")
    parser.add_argument("--n-samples", type=int, default=200, help="class-balanced test images to time on")
    parser.add_argument("--batch-size", type=int, default=256, help="as batlit.evaluate's default")
    parser.add_argument("--reference", type=Path, default=ROOT / "results/round2/large",
                        help="kept round-2 evaluations whose fractions the extrapolation uses")
    parser.add_argument("--runs", type=int, default=27, help="evaluations the study makes")
    parser.add_argument("--hours", type=float, default=6.0, help="the time the evaluations may take")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--measured", action="store_true",
                        help="ckpt is this script's JSON output: extrapolate again from its measurement, measure nothing")
    args = parser.parse_args(argv)
    if not args.ckpt.is_file():
        parser.error(f"ckpt: no file at '{args.ckpt}'")
    refs = reference_fractions(args.reference)
    if not refs:
        parser.error(f"--reference: no eval_autoattack.json with the standard components under '{args.reference}'")
    if args.measured:
        result = json.loads(args.ckpt.read_text())
        result.pop("extrapolation", None)
    else:
        result = measure(args.ckpt, args.n_samples, args.batch_size, 0)
    per_attacked = {c: result["components"][c]["wall_s_per_image"] for c in COMPONENTS}
    costs = {r["run"]: per_image_cost(per_attacked, r) for r in refs}
    worst = max(costs.values())
    # round 2's machine against this one: PGD-20's seconds per image there (its kept eval_pgd20.json)
    pgd_there = [json.loads(p.read_text()) for p in sorted(args.reference.glob("*/seed*/eval_pgd20.json"))]
    there = statistics.fmean(r["seconds"] / r["n_samples"] for r in pgd_there) if pgd_there else None
    # on round 2's machine: every component scaled as PGD-20 (the same model's fp32 forwards and backwards)
    ratio = result["pgd20_wall_s_per_image"] / there if there else None
    on_ref = [r["seconds_per_1000"] / 1000 * original_over_variant(per_attacked, r) for r in refs]
    ref_max, ref_mean = max(on_ref), statistics.fmean(on_ref)
    result["extrapolation"] = {
        "reference": str(args.reference), "per_image_s_by_reference_run": {k: round(v, 3) for k, v in costs.items()},
        "per_image_s_mean": round(statistics.fmean(costs.values()), 3), "per_image_s_max": round(worst, 3),
        "runs": args.runs, "hours": args.hours,
        "affordable_n_samples_at_max": affordable(worst, args.runs, args.hours),
        "affordable_n_samples_at_mean": affordable(statistics.fmean(costs.values()), args.runs, args.hours),
        "pgd20_s_per_image_reference_machine": there,
        "this_machine_over_reference_machine_pgd20": ratio,
        # on the reference machine from its own kept times: each run's variant seconds per image times
        # the original/variant ratio measured here for that run's fractions
        "per_image_s_on_reference_machine_by_run": {
            r["run"]: round(r["seconds_per_1000"] / 1000 * original_over_variant(per_attacked, r), 3) for r in refs},
        "per_image_s_max_on_reference_machine_from_variant": round(ref_max, 3),
        "affordable_n_samples_at_max_on_reference_machine_from_variant": affordable(ref_max, args.runs, args.hours),
        "per_image_s_mean_on_reference_machine_from_variant": round(ref_mean, 3),
        "affordable_n_samples_at_mean_on_reference_machine_from_variant": affordable(ref_mean, args.runs, args.hours),
        "per_image_s_max_on_reference_machine": None if not ratio else round(worst / ratio, 3),
        "affordable_n_samples_at_max_on_reference_machine": None if not ratio else
        affordable(worst / ratio, args.runs, args.hours),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
