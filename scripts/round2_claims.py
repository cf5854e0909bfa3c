"""The headline claims of BAT and of the later methods, checked on a study folder of study_round2.sh.

Each claim compares a method with the baseline its paper compares against, on the AutoAttack
evaluation of each seed (``eval_autoattack.json``: clean and robust accuracy on the same test
images, 100 per class in the study): the worst-class robust accuracy goes up, and the average
robust accuracy does not go down by more than the noise (BAT claims a higher average as well).

Differences are paired by seed (method seed s against baseline seed s: the same data split and
initialisation) and given in accuracy points, with two measures of noise:

- ``sd``: the standard deviation over seeds of the paired differences (two or more seeds);
- ``binomial SE``: the binomial standard error of the mean difference from the test images alone,
  sqrt(p(1-p)/n) per accuracy with n the images behind it (a class's count for the worst class,
  all images for the average; p with Agresti and Coull's two successes and two failures added, so
  that 0% still has noise), the two runs taken as independent (conservative: they share the
  images), divided by sqrt(seeds). For the worst class it treats the worst class as fixed, an
  approximation when the worst class changes from run to run.

The verdict uses SE, the larger of sd/sqrt(seeds) and the binomial SE: ``holds`` when the
worst-class gain is above 2 SE and the average does not fall below -2 SE (BAT: the average must
rise above 2 SE too); ``reversed`` when the worst class falls below -2 SE; ``within noise`` when
neither, naming the average's move where it is beyond 2 SE (``within noise; average falls beyond 2
SE``); and a worst-class gain whose average part fails says which part. One seed gives no sd, and
the verdict says so. Between scales, the worst-class effect ``grows`` or ``shrinks`` when the
change is beyond 2 SE of the two differences combined.

    python scripts/round2_claims.py results/round2/small
    python scripts/round2_claims.py results/round2/small --larger results/round2/large

With --larger it first says what the larger scale bought: each method's average clean and robust
error at both scales (PGD-20 on the test split, metrics.json; AutoAttack, eval_autoattack.json),
mean ± sd over seeds, and the change.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from round2_tables import ALL  # scripts/ is on the path: this script's own folder


@dataclass(frozen=True)
class Claim:
    method: str
    baseline: str
    source: str  # who claims it
    average_up: bool = False  # the claim includes a higher average robust accuracy


CLAIMS = [
    Claim("bat", "pgd_at", "BAT (AAAI 2023, Table 1): better average and worst class than PGD-AT", average_up=True),
    Claim("bat", "trades6", "BAT (AAAI 2023, Table 1): better average and worst class than TRADES(6)", average_up=True),
    Claim("frl", "pgd_at", "FRL (ICML 2021): a better worst class than its PGD-AT start"),
    Claim("frl_trades", "trades6", "FRL, from TRADES(6) as the later papers run it"),
    Claim("cfa", "trades6", "CFA (CVPR 2023): a better worst class than TRADES at little average cost"),
    Claim("wat", "trades6", "WAT (AAAI 2023): a better worst class than TRADES at little average cost"),
    Claim("dafa", "trades6", "DAFA (ICLR 2024): a better worst class than TRADES at little average cost"),
    Claim("faal_trades", "trades6", "FAAL (2024): fine-tuning TRADES(6) lifts its worst class"),
    Claim("faal_at", "pgd_at", "FAAL (2024): fine-tuning PGD-AT lifts its worst class"),
]
NAMES = dict(ALL)  # each method's display name, one list for both scripts


def records(study: Path, name: str) -> dict[int, dict]:
    """seed -> eval_autoattack.json of study/name (FRL from PGD-AT: the τ folder chosen on validation)."""
    if name == "frl":
        choice = study / "frl_choice.json"
        if not choice.is_file():
            return {}
        name = json.loads(choice.read_text())["chosen"]
    out = {}
    for path in sorted((study / name).glob("seed*/eval_autoattack.json")):
        out[int(path.parent.name[4:])] = json.loads(path.read_text())
    return out


def _worst_count(record: dict) -> int:
    counts = record.get("count_per_class")
    per_class = record.get("rob_per_class")
    if counts and per_class:
        return int(counts[max(range(len(per_class)), key=per_class.__getitem__)])
    return max(1, round(record["n_samples"] / 10))


def _binomial_var(accuracy: float, n: int) -> float:
    """Agresti–Coull: p̃(1 − p̃)/(n + 4) with p̃ = (k + 2)/(n + 4), so that an accuracy of 0 or 1 (a
    worst class with no robust image left) still carries the noise of n images, not none."""
    p = (accuracy * n + 2) / (n + 4)
    return p * (1 - p) / (n + 4)


@dataclass
class Difference:
    mean: float  # accuracy points
    sd: float | None
    binomial_se: float
    seeds: int

    @property
    def se(self) -> float:
        seed_se = self.sd / math.sqrt(self.seeds) if self.sd is not None else 0.0
        return max(seed_se, self.binomial_se)

    def cell(self) -> str:
        sd = "-" if self.sd is None else f"{self.sd:.1f}"
        return f"{self.mean:+.1f} (sd {sd}, binomial SE {self.binomial_se:.1f})"


def difference(method: dict[int, dict], base: dict[int, dict], key: str) -> Difference | None:
    """Paired difference of accuracy (1 - error) in points for error key ``rob_worst`` or ``rob_avg``."""
    seeds = sorted(set(method) & set(base))
    if not seeds:
        return None
    diffs, var = [], 0.0
    for s in seeds:
        m, b = 1 - method[s][key], 1 - base[s][key]
        diffs.append(100 * (m - b))
        if key == "rob_worst":
            var += _binomial_var(m, _worst_count(method[s])) + _binomial_var(b, _worst_count(base[s]))
        else:
            var += _binomial_var(m, method[s]["n_samples"]) + _binomial_var(b, base[s]["n_samples"])
    binomial_se = 100 * math.sqrt(var) / len(seeds)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else None
    return Difference(statistics.fmean(diffs), sd, binomial_se, len(seeds))


def direction(d: Difference) -> str:
    return "up" if d.mean > 2 * d.se else "down" if d.mean < -2 * d.se else "noise"


def verdict(claim: Claim, worst: Difference, average: Difference) -> str:
    w, a = direction(worst), direction(average)
    if w == "down":
        text = "reversed"
    elif w == "noise":
        # the worst class is within noise; the average's move is named only where it is beyond 2 SE
        text = "within noise" + {"up": "; average rises beyond 2 SE", "down": "; average falls beyond 2 SE",
                                 "noise": ""}[a]
    elif claim.average_up:
        text = "holds" if a == "up" else f"worst class only (average {'falls' if a == 'down' else 'within noise'})"
    else:
        text = "holds" if a != "down" else "worst class up, at an average cost beyond noise"
    return text + (" (one seed)" if worst.seeds == 1 else "")


def evaluate(study: Path) -> list[tuple[Claim, Difference, Difference, str]]:
    out = []
    for claim in CLAIMS:
        method, base = records(study, claim.method), records(study, claim.baseline)
        worst, average = difference(method, base, "rob_worst"), difference(method, base, "rob_avg")
        if worst is None or average is None:
            continue
        out.append((claim, worst, average, verdict(claim, worst, average)))
    return out


def table(study: Path, larger: Path | None = None) -> str:
    small = evaluate(study)
    if not small:
        return "(no claim has both its method's and its baseline's AutoAttack evaluation on a common seed yet)"
    big = {(c.method, c.baseline): (w, a, v) for c, w, a, v in evaluate(larger)} if larger else {}
    header = ["Claim", "Seeds", "Worst-class AA acc., method − baseline", "Average AA acc.", "Verdict"]
    if larger:
        header = ["Claim", "Seeds", "Worst class", "Average", "Verdict",
                  "Seeds (larger)", "Worst class (larger)", "Average (larger)", "Verdict (larger)",
                  "Worst-class effect, small → larger"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for claim, worst, average, text in small:
        row = [f"{NAMES[claim.method]} vs {NAMES[claim.baseline]}: {claim.source}", str(worst.seeds), worst.cell(), average.cell(), text]
        if larger:
            if (claim.method, claim.baseline) in big:
                w, a, v = big[(claim.method, claim.baseline)]
                change = w.mean - worst.mean
                trend = "grows" if change > 2 * math.hypot(w.se, worst.se) else \
                    "shrinks" if change < -2 * math.hypot(w.se, worst.se) else "no clear change"
                row += [str(w.seeds), w.cell(), a.cell(), v, f"{change:+.1f} points: {trend}"]
            else:
                row += ["-"] * 5
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


SCALE_ROWS = [(name, NAMES[name]) for name in
              ("pgd_at", "trades6", "bat", "cfa", "wat", "dafa", "faal_trades", "frl_trades")]


def _errors(study: Path, name: str) -> dict[str, list[float]]:
    """Average errors in % over the seeds of study/name: clean and PGD-20 on the test split
    (metrics.json), clean and AutoAttack on the AutoAttack images (eval_autoattack.json)."""
    out: dict[str, list[float]] = {"std": [], "rob": [], "aa_std": [], "aa_rob": []}
    for run in sorted((study / name).glob("seed*/")):
        for file, prefix in (("metrics.json", ""), ("eval_autoattack.json", "aa_")):
            record = json.loads((run / file).read_text()) if (run / file).is_file() else {}
            for key in ("std", "rob"):
                if f"{key}_avg" in record:
                    out[prefix + key].append(100 * record[f"{key}_avg"])
    return out


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.fmean(values):.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")


def scale_table(study: Path, larger: Path) -> str:
    """What the larger scale bought: each method's average errors at both scales, and the change."""
    header = ["Method", "Seeds (small, larger)", "Clean error", "PGD-20 robust error", "AA clean error",
              "AA robust error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, label in SCALE_ROWS:
        small, big = _errors(study, name), _errors(larger, name)
        if not small["std"] or not big["std"]:
            continue
        cells = []
        for key in ("std", "rob", "aa_std", "aa_rob"):
            cell = f"{_mean_sd(small[key])} → {_mean_sd(big[key])}"
            if small[key] and big[key]:
                cell += f" ({statistics.fmean(big[key]) - statistics.fmean(small[key]):+.1f})"
            cells.append(cell)
        lines.append(f"| {label} | {len(small['std'])}, {len(big['std'])} | " + " | ".join(cells) + " |")
    if len(lines) == 2:
        return "(no method has a finished run at both scales yet)"
    return "\n".join(lines) + ("\n\nAverage errors in %, small scale → larger scale, mean ± sd over seeds (the change "
                               "in brackets): clean and PGD-20 on the 2,000 test images, clean and AutoAttack on the "
                               "1,000 AutoAttack images.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a study_round2.sh results folder (the small scale)")
    parser.add_argument("--larger", type=Path, help="the larger scale's folder: each claim at both scales")
    args = parser.parse_args(argv)
    for folder in (args.study, args.larger):
        if folder is not None and not (folder / "protocol.txt").is_file():
            parser.error(f"{folder}: not a study folder (no protocol.txt)")
    if args.larger:
        print(f"What the larger scale bought ({args.study} → {args.larger}):\n\n{scale_table(args.study, args.larger)}\n")
        print("The claims at both scales:\n")
    print(table(args.study, args.larger))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
