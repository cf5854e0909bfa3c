"""batlit.report.stats (Wilson interval, exact McNemar, paired bootstrap) and the class-balanced evaluation
subset (batlit.data.base.balanced_subset), against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from batlit.data.base import balanced_subset
from batlit.report.stats import mcnemar_exact, pair_runs, paired_bootstrap, wilson_interval


def test_wilson_interval_by_hand():
    # 5 of 10: centre 0.5, half-width z/(1+z²/n)·sqrt(p(1-p)/n + z²/4n²) = 0.26341
    low, high = wilson_interval(5, 10)
    assert (low, high) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    # 0 of 10: the upper bound is z²/(n+z²) = 3.84146/13.84146
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=1e-6))
    assert wilson_interval(10, 10) == (pytest.approx(0.722467, abs=1e-6), 1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_by_hand_and_against_scipy():
    # 1 discordant image one way, 9 the other: p = 2·P(X <= 1), X ~ Bin(10, 1/2) = 2·11/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024, rel=1e-12)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    binomtest = pytest.importorskip("scipy.stats").binomtest
    for a, b in [(0, 1), (2, 7), (12, 30), (40, 41), (100, 130), (5, 0)]:
        assert mcnemar_exact(a, b) == pytest.approx(binomtest(a, a + b, 0.5).pvalue, rel=1e-9), (a, b)


def test_paired_bootstrap_observed_differences_by_hand():
    labels = np.array([0, 0, 1, 1])
    a = np.array([[1, 1, 1, 0]], bool)   # per class 1, 1/2: avg 3/4, worst 1/2
    b = np.array([[1, 0, 0, 0]], bool)   # per class 1/2, 0: avg 1/4, worst 0
    out = paired_bootstrap(a, b, labels, 2, draws=400)
    assert out["avg"]["diff"] == pytest.approx(0.5) and out["worst"]["diff"] == pytest.approx(0.5)
    assert out["avg"]["low"] <= 0.5 <= out["avg"]["high"]
    same = paired_bootstrap(a, a, labels, 2, draws=200)
    assert same["avg"] == {"diff": 0.0, "low": 0.0, "high": 0.0}


def test_paired_bootstrap_pairs_the_images():
    """Two models that differ on 40 of 2000 images: the paired interval is as narrow as the spread
    of the per-image differences says (sd(d)/sqrt(n)), far narrower than if the two were resampled
    apart, and it is seeded."""
    rng = np.random.default_rng(1)
    n = 2000
    labels = np.repeat([0, 1], n // 2)
    a = rng.random(n) < 0.5
    b = a.copy()
    flip = rng.choice(n, 40, replace=False)
    b[flip[:30]] = False
    b[flip[30:]] = True  # A − B: +30 and −10 images, the rest agree
    a[flip[:30]] = True
    a[flip[30:]] = False
    out = paired_bootstrap(a[None], b[None], labels, 2, draws=2000, seed=0)
    d = a.astype(float) - b.astype(float)
    expected_half = 1.96 * d.std() / math.sqrt(n)
    half = (out["avg"]["high"] - out["avg"]["low"]) / 2
    assert out["avg"]["diff"] == pytest.approx(20 / n, abs=1e-12)
    assert half == pytest.approx(expected_half, rel=0.2)
    assert half < 0.3 * 1.96 * math.sqrt(2 * 0.25 / n)  # unpaired would be about sqrt(2)·0.5/sqrt(n) wide
    assert paired_bootstrap(a[None], b[None], labels, 2, draws=2000, seed=0) == out


def test_paired_bootstrap_resamples_the_runs():
    """Group A's two seeds disagree completely (one robust everywhere, one nowhere): drawing its runs
    gives a mean of 0, 1/2 or 1, so the interval spans about ±1/2 around B's 1/2; without the runs
    drawn it would be a point."""
    labels = np.repeat([0, 1], 100)
    a = np.stack([np.ones(200, bool), np.zeros(200, bool)])
    b = np.tile([True, False], 100)[None]
    out = paired_bootstrap(a, b, labels, 2, draws=2000)
    assert out["avg"]["diff"] == pytest.approx(0.0)
    assert out["avg"]["low"] < -0.4 and out["avg"]["high"] > 0.4


def test_runs_pair_by_seed_else_in_order():
    assert pair_runs([0, 1, 2], [2, 0]) == [(0, 1), (2, 0)]
    assert pair_runs([5, 3], [1, 2, 4]) == [(1, 0), (0, 1)]


def test_balanced_subset_rule():
    labels = torch.tensor([0] * 50 + [1] * 50 + [2] * 3 + [3] * 50)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    # 31 of 4 classes of 50: 7 each, the 3 left over to the lowest-numbered classes: 8, 8, 8, 7
    even = torch.arange(200) % 4
    assert torch.bincount(even[balanced_subset(even, 31, g())], minlength=4).tolist() == [8, 8, 8, 7]
    # class 2 (3 images) below a 7-image share: all 3, then 28 over the others: 10, 9, 9
    assert torch.bincount(labels[balanced_subset(labels, 31, g())], minlength=4).tolist() == [10, 9, 3, 9]
    # class 2 has only 3: it gives them all, the other classes share its shortfall (40 = 3 + 37 -> 13, 12, 12)
    picked = balanced_subset(labels, 40, g())
    assert torch.bincount(labels[picked], minlength=4).tolist() == [13, 12, 3, 12]
    assert picked.tolist() == sorted(set(picked.tolist()))
    # nested: a smaller n with the same seed keeps a subset of a larger n's images
    assert set(balanced_subset(labels, 20, g()).tolist()) <= set(balanced_subset(labels, 60, g()).tolist())
    assert balanced_subset(labels, labels.numel(), g()).tolist() == list(range(labels.numel()))
    assert balanced_subset(labels, 31, torch.Generator().manual_seed(1)).tolist() != balanced_subset(labels, 31, g()).tolist()
    with pytest.raises(ValueError):
        balanced_subset(labels, labels.numel() + 1, g())
