"""The claims of study round 3 (docs/results_round3.md), from paired per-image statistics.

Every run of round 3 is evaluated by the original AutoAttack on the same class-balanced test images
(n_samples and eval_seed shared), and its per-image outcomes are kept (eval_autoattack.npz). So a
method and its baseline are compared image by image and seed by seed (batlit.report.stats):

- **the differences**, method − baseline in accuracy points, of the average and of the worst-class
  robust accuracy under AutoAttack (each the mean over the seeds both have), with a 95% paired
  bootstrap interval: each draw resamples the images (the same draw for both: paired) and, per
  method, its seeds (batlit.report.stats.paired_bootstrap; 2,000 draws, seeded);
- **McNemar's exact test** on the pooled images: the image-seed pairs (same seed for both) robust
  under one model only; over all images (the average), and over the images of the baseline's worst
  class (its lowest robust accuracy pooled over seeds);
- **the verdict**: the worst class is ``up`` (``down``) when its bootstrap interval lies above (below)
  0; the average is ``up`` (``down``) when McNemar's p < 0.05 with a positive (negative) difference.
  ``holds`` = worst class up and average not down (BAT's claim: average up as well); ``reversed`` =
  worst class down; else ``within noise``, naming an average that moves. Each with its p-values.
- **ρ** (DAFA's trade-off, as round 2: relative worst-class gain minus relative average loss, on the
  seed means): ρ_rob under AutoAttack, ρ_nat on the clean accuracy of the full test split
  (eval_pgd20.json's clean predictions: 10,000 images).
- **power**: the smallest worst-class difference the design resolves at 2 SE, SE the bootstrap
  standard deviation of the worst-class difference.

    python scripts/round3_claims.py results/round3
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from round2_claims import CLAIMS as ROUND2_CLAIMS
from round2_claims import Claim
from round3_tables import ROWS, study_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from batlit.report.tables import find_runs, read_per_image, rho  # noqa: E402
from batlit.report.stats import bootstrap_draws, difference_interval, mcnemar_exact  # noqa: E402

ALPHA = 0.05
DRAWS = 2000
NAMES = dict(ROWS)
_ROUND2 = {(c.method, c.baseline): c for c in ROUND2_CLAIMS}
CLAIMS = [_ROUND2[("frl_trades", "trades6")], _ROUND2[("cfa", "trades6")],
          Claim("cfa_fawa", "trades6", "CFA with FAWA switched on (threshold 0.04, batlit's choice, not the authors')"),
          _ROUND2[("wat", "trades6")], _ROUND2[("dafa", "trades6")], _ROUND2[("faal_trades", "trades6")],
          _ROUND2[("bat", "pgd_at")], _ROUND2[("bat", "trades6")]]


class ClaimsError(Exception):
    """Kept results that cannot be compared (one line)."""


@dataclass
class Side:
    """One method's runs on the shared images: seed -> robust (bool, n) and its full-split clean errors."""

    robust: dict[int, np.ndarray]
    clean: dict[int, tuple[float, float]]  # seed -> (std_avg, std_worst) errors on the full test split
    label: np.ndarray
    index: np.ndarray
    num_classes: int
    where: str


def load(study: Path, name: str) -> Side | None:
    folder = study / name
    if not folder.is_dir():
        return None
    robust, clean, first = {}, {}, None
    for run in find_runs([folder]):
        per_image = read_per_image(run, "autoattack")
        if per_image is None:
            continue
        seed = int(run.metrics.get("seed", run.config.get("seed")))
        if first is not None and (not np.array_equal(per_image.index, first.index)
                                  or not np.array_equal(per_image.label, first.label)):
            raise ClaimsError(f"{per_image.path} and {first.path} hold different test images")
        first = first or per_image
        robust[seed] = per_image.robust
        pgd = run.evals.get("pgd20")
        if pgd is not None:
            clean[seed] = (float(pgd["std_avg"]), float(pgd["std_worst"]))
    if first is None:
        return None
    return Side(robust, clean, first.label, first.index, first.num_classes, str(folder))


@dataclass
class Result:
    claim: Claim
    seeds: list[int]
    images: int
    classes: int
    avg: dict[str, float]    # diff, low, high in points
    worst: dict[str, float]
    worst_se: float          # points
    mcnemar_all: tuple[int, int, float]
    mcnemar_worst: tuple[int, int, float]
    worst_class: str
    rho_rob: float
    rho_nat: float
    verdict: str


def _points(d: dict[str, float]) -> dict[str, float]:
    return {k: 100 * v for k, v in d.items()}


def verdict(claim: Claim, worst: dict[str, float], avg_diff: float, p_avg: float, p_worst: float) -> str:
    w = "up" if worst["low"] > 0 else "down" if worst["high"] < 0 else "noise"
    a = "noise" if p_avg >= ALPHA else "up" if avg_diff > 0 else "down"
    ps = f"(worst-class McNemar p = {p_worst:.2g}; average p = {p_avg:.2g})"
    if w == "down":
        text = "reversed"
    elif w == "noise":
        text = "within noise" + {"up": "; average rises", "down": "; average falls", "noise": ""}[a]
    elif claim.average_up:
        text = "holds" if a == "up" else f"worst class only (average {'falls' if a == 'down' else 'within noise'})"
    else:
        text = "holds" if a != "down" else "worst class up, at an average cost"
    return f"{text} {ps}"


def compare(claim: Claim, m: Side, b: Side, class_names: list[str]) -> Result | None:
    seeds = sorted(set(m.robust) & set(b.robust))
    if not seeds:
        return None
    if not (np.array_equal(m.index, b.index) and np.array_equal(m.label, b.label)):
        raise ClaimsError(f"{m.where} and {b.where}: AutoAttack on different test images")
    ra, rb = np.stack([m.robust[s] for s in seeds]), np.stack([b.robust[s] for s in seeds])
    K = max(m.num_classes, b.num_classes)
    da = bootstrap_draws(ra, m.label, K, DRAWS, seed=0, stream=1)
    db = bootstrap_draws(rb, b.label, K, DRAWS, seed=0, stream=2)
    boot = difference_interval(da, db)
    worst_se = 100 * float(np.std(da["worst"][1] - db["worst"][1], ddof=1))
    only_a, only_b = int((ra & ~rb).sum()), int((~ra & rb).sum())
    per_class = np.array([rb[:, b.label == k].mean() for k in range(K)])  # the baseline's, pooled over seeds
    k = int(per_class.argmin())
    in_k = b.label == k
    wa, wb = int((ra[:, in_k] & ~rb[:, in_k]).sum()), int((~ra[:, in_k] & rb[:, in_k]).sum())
    p_all, p_worst = mcnemar_exact(only_a, only_b), mcnemar_exact(wa, wb)

    def errors(r: np.ndarray, label: np.ndarray) -> tuple[float, float]:
        acc = np.stack([r[:, label == c].mean(1) for c in range(K)], 1)  # (seeds, K)
        return float(1 - acc.mean(1).mean()), float(1 - acc.min(1).mean())

    rob_m, rob_b = errors(ra, m.label), errors(rb, b.label)
    nat_seeds = [s for s in seeds if s in m.clean and s in b.clean]
    rho_nat = float("nan")
    if nat_seeds:
        nm = [statistics.fmean(m.clean[s][i] for s in nat_seeds) for i in (0, 1)]
        nb = [statistics.fmean(b.clean[s][i] for s in nat_seeds) for i in (0, 1)]
        rho_nat = rho(nm[0], nm[1], nb[0], nb[1])
    avg, worst = _points(boot["avg"]), _points(boot["worst"])
    return Result(claim, seeds, int(m.label.size), K, avg, worst, worst_se, (only_a, only_b, p_all), (wa, wb, p_worst),
                  class_names[k] if k < len(class_names) else str(k), rho(*rob_m, *rob_b), rho_nat,
                  verdict(claim, worst, avg["diff"], p_all, p_worst))


def _class_names(study: Path) -> list[str]:
    for run in find_runs([study]):
        names = run.metrics.get("class_names")
        if names:
            return list(names)
    return []


def evaluate(study: Path) -> list[Result]:
    sides: dict[str, Side | None] = {}
    names = _class_names(study)
    out = []
    for claim in CLAIMS:
        for name in (claim.method, claim.baseline):
            if name not in sides:
                sides[name] = load(study, name)
        m, b = sides[claim.method], sides[claim.baseline]
        if m is None or b is None:
            continue
        result = compare(claim, m, b, names)
        if result is not None:
            out.append(result)
    return out


def _interval(d: dict[str, float]) -> str:
    return f"{d['diff']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]"


def _rho(v: float) -> str:
    return "-" if v != v else f"{v:+.3f}"


def table(results: list[Result]) -> str:
    if not results:
        return "(no claim has both its method's and its baseline's per-image AutoAttack outcomes on a common seed yet)"
    header = ["Claim", "Seeds", "Worst class, points [95% CI]", "Average, points [95% CI]",
              "McNemar, all images (only method / only baseline, p)", "McNemar, baseline's worst class", "ρ_rob",
              "ρ_nat", "Verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        a, b, p = r.mcnemar_all
        wa, wb, wp = r.mcnemar_worst
        lines.append("| " + " | ".join([
            f"{NAMES[r.claim.method]} vs {NAMES[r.claim.baseline]}: {r.claim.source}", ",".join(map(str, r.seeds)),
            _interval(r.worst), _interval(r.avg), f"{a}/{b}, p = {p:.2g}", f"{r.worst_class}: {wa}/{wb}, p = {wp:.2g}",
            _rho(r.rho_rob), _rho(r.rho_nat), r.verdict]) + " |")
    return "\n".join(lines)


def power_line(results: list[Result]) -> str:
    if not results:
        return ""
    two_se = sorted(2 * r.worst_se for r in results)
    seeds = sorted({len(r.seeds) for r in results})
    return (f"Power: on {results[0].images} images ({results[0].images // results[0].classes} per class) and "
            f"{'/'.join(map(str, seeds))} paired seed{'s' * (seeds != [1])}, this design resolves a worst-class difference at 2 SE "
            f"from {statistics.median(two_se):.1f} points (the median over the {len(results)} claims of twice the "
            f"bootstrap SE of the worst-class difference; from {two_se[0]:.1f} to {two_se[-1]:.1f}).")


def main(argv: list[str] | None = None) -> int:
    study = study_folder(argv, __doc__)
    try:
        results = evaluate(study)
    except ClaimsError as err:
        print(f"round3_claims: {err}", file=sys.stderr)
        return 2
    print(table(results))
    line = power_line(results)
    if line:
        print(f"\n{line}")
    print(f"\nDifferences are method − baseline under the original AutoAttack, in points of accuracy, the mean over "
          f"the paired seeds; intervals: 95% paired bootstrap over images and seeds ({DRAWS} draws). The verdict's "
          f"average test is McNemar's on all pooled images (p < {ALPHA}); its worst-class test is the interval.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
