"""scripts/round2_claims.py: each paper's claim, paired by seed, with its noise, on hand-made study folders."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import round2_claims as claims  # noqa: E402


def _seed(study, name, seed, rob_avg, rob_worst, n=1000):
    run = study / name / f"seed{seed}"
    run.mkdir(parents=True)
    per_class = [rob_avg] * 10
    per_class[3] = rob_worst
    (run / "eval_autoattack.json").write_text(json.dumps(
        {"rob_avg": rob_avg, "rob_worst": rob_worst, "rob_per_class": per_class,
         "count_per_class": [n // 10] * 10, "n_samples": n}))


@pytest.fixture
def study(tmp_path):
    s = tmp_path / "small"
    s.mkdir()
    (s / "protocol.txt").write_text("experiment=study_cifar10_cpu\n")
    for seed, worst in ((0, 0.9), (1, 0.92)):
        _seed(s, "trades6", seed, 0.8, worst)
    _seed(s, "wat", 0, 0.81, 0.7)    # worst-class accuracy +20 points, average -1: holds
    _seed(s, "wat", 1, 0.81, 0.72)
    _seed(s, "dafa", 0, 0.8, 0.99)   # worst class -9 and -7: reversed
    _seed(s, "dafa", 1, 0.8, 0.99)
    _seed(s, "bat", 0, 0.83, 0.7)    # BAT also claims the average: -3 points, beyond 2 binomial SE (2.6)
    _seed(s, "bat", 1, 0.83, 0.72)
    _seed(s, "cfa", 0, 0.8, 0.88)    # +2 points on one seed: inside the binomial noise
    _seed(s, "cfa", 2, 0.8, 0.5)     # seed 2 has no TRADES(6) partner: not paired
    return s


def _var(correct, n):
    """Agresti–Coull: two successes and two failures added."""
    p = (correct + 2) / (n + 4)
    return p * (1 - p) / (n + 4)


def test_paired_differences_and_their_noise_by_hand(study):
    worst = claims.difference(claims.records(study, "wat"), claims.records(study, "trades6"), "rob_worst")
    assert worst.mean == pytest.approx(20) and worst.sd == pytest.approx(0, abs=1e-9) and worst.seeds == 2
    # the worst class's 100 images: 30 and 10 robust on seed 0, 28 and 8 on seed 1
    var = _var(30, 100) + _var(10, 100) + _var(28, 100) + _var(8, 100)
    assert worst.binomial_se == pytest.approx(100 * math.sqrt(var) / 2)
    average = claims.difference(claims.records(study, "wat"), claims.records(study, "trades6"), "rob_avg")
    assert average.mean == pytest.approx(-1) and average.binomial_se == pytest.approx(
        100 * math.sqrt(2 * (_var(190, 1000) + _var(200, 1000))) / 2)
    nothing_left = claims.difference(claims.records(study, "dafa"), claims.records(study, "dafa"), "rob_worst")
    assert nothing_left.binomial_se == pytest.approx(100 * math.sqrt(4 * _var(1, 100)) / 2)  # 1% still has noise
    one = claims.difference(claims.records(study, "cfa"), claims.records(study, "trades6"), "rob_worst")
    assert one.seeds == 1 and one.sd is None and one.mean == pytest.approx(2)


def test_verdicts(study):
    found = {(c.method, c.baseline): v for c, _, _, v in claims.evaluate(study)}
    assert found == {("wat", "trades6"): "holds", ("dafa", "trades6"): "reversed",
                     ("bat", "trades6"): "worst class only (average falls)",
                     ("cfa", "trades6"): "within noise (one seed)"}  # no PGD-AT: its claims are left out


def test_a_worst_class_within_noise_names_the_averages_move_beyond_noise():
    bat = claims.CLAIMS[0]  # claims a higher average too
    flat, falls, rises = (claims.Difference(m, 1.0, 1.0, 3) for m in (0.5, -3.0, 3.0))
    assert claims.verdict(bat, flat, falls) == "within noise; average falls beyond 2 SE"
    assert claims.verdict(bat, flat, rises) == "within noise; average rises beyond 2 SE"
    assert claims.verdict(bat, flat, flat) == "within noise"
    one_seed = claims.Difference(0.5, None, 1.0, 1)
    assert claims.verdict(bat, one_seed, falls) == "within noise; average falls beyond 2 SE (one seed)"


def test_the_cli_compares_the_scales(study, tmp_path):
    large = tmp_path / "large"
    large.mkdir()
    (large / "protocol.txt").write_text("experiment=study_cifar10_cpu_large\n")
    for seed in (0, 1):
        _seed(large, "trades6", seed, 0.7, 0.9)
        _seed(large, "wat", seed, 0.7, 0.88)  # +2 points: the +20 of the small scale shrinks beyond 2 SE
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "round2_claims.py"), str(study), "--larger", str(large)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    wat = next(line for line in proc.stdout.splitlines() if line.startswith("| WAT vs TRADES(6)"))
    # larger scale: SE 3.2 for the worst class (12 and 10 of 100 images robust, two seeds), 1.4 for the
    # average; the change, -18 points, is beyond 2·hypot(3.2, 3.8) = 9.9
    assert wat.endswith("| 2 | +20.0 (sd 0.0, binomial SE 3.8) | -1.0 (sd 0.0, binomial SE 1.3) | holds | 2 | "
                        "+2.0 (sd 0.0, binomial SE 3.2) | +0.0 (sd 0.0, binomial SE 1.4) | within noise | "
                        "-18.0 points: shrinks |"), wat
    dafa = next(line for line in proc.stdout.splitlines() if line.startswith("| DAFA vs TRADES(6)"))
    assert dafa.endswith("| reversed | - | - | - | - | - |"), dafa  # no DAFA run at the larger scale yet
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "round2_claims.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a study folder (no protocol.txt)" in bad.stderr


def test_what_the_larger_scale_bought(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    for folder, runs in ((small, {0: (0.64, 0.76, 0.63, 0.81), 1: (0.62, 0.74, 0.63, 0.81)}),
                         (large, {0: (0.53, 0.71, 0.52, 0.76)})):
        (folder / "pgd_at").mkdir(parents=True)
        (folder / "protocol.txt").write_text("experiment=x\n")
        for seed, (std, rob, aa_std, aa_rob) in runs.items():
            run = folder / "pgd_at" / f"seed{seed}"
            run.mkdir()
            (run / "metrics.json").write_text(json.dumps({"std_avg": std, "rob_avg": rob}))
            (run / "eval_autoattack.json").write_text(json.dumps({"std_avg": aa_std, "rob_avg": aa_rob}))
    (small / "wat" / "seed0").mkdir(parents=True)  # a method trained at one scale only has no row
    (small / "wat" / "seed0" / "metrics.json").write_text(json.dumps({"std_avg": 0.6, "rob_avg": 0.8}))
    text = claims.scale_table(small, large)
    # clean: 64 and 62 (63.0 ± 1.4) → 53: -10.0; PGD-20: 75.0 ± 1.4 → 71: -4.0; AA: 63 → 52, 81 → 76
    assert "| PGD-AT | 2, 1 | 63.0 ± 1.4 → 53.0 (-10.0) | 75.0 ± 1.4 → 71.0 (-4.0) | 63.0 ± 0.0 → 52.0 (-11.0) | " \
           "81.0 ± 0.0 → 76.0 (-5.0) |" in text.splitlines()
    assert "WAT" not in text
    assert claims.scale_table(large, tmp_path / "nothing") == "(no method has a finished run at both scales yet)"
