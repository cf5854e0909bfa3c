"""Intervals and paired tests for class-wise robustness numbers (``batlit.report``, ``batlit.evaluate``).

- :func:`wilson_interval`: a 95% interval for one class's error rate over its n images
  (Wilson 1927; it keeps its coverage near 0 and 1, where the normal interval does not).
- :func:`mcnemar_exact`: McNemar's exact test of two models on the same images: under the null the
  discordant images (robust under one model only) fall on either side with probability 1/2, so the
  two-sided p-value is that of a binomial test on them.
- :func:`paired_bootstrap`: percentile intervals for the difference of two groups of runs in average
  and worst-class robust accuracy, resampling the images (the same draw for both groups: paired) and,
  where a group has several runs (training seeds), its runs.

Plain numpy and the standard library: these are read by the report, never by training.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
CHUNK = 200  # bootstrap draws held in memory at once


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``k`` in ``n`` (fractions); ``(nan, nan)`` for n = 0."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must lie in [0, n={n}]")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # at k = 0 (k = n) the bound is exactly 0 (1); say so rather than leave float rounding there
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly in integers, then one division."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    ``only_a``: images robust under model A and not B; ``only_b``: the reverse. The images both get
    right or both get wrong carry no information on which is better. p = min(1, 2 P(X <= min)) with
    X ~ Binomial(only_a + only_b, 1/2); 1 when there is no discordant image.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    return min(1.0, 2 * _binom_cdf_half(min(only_a, only_b), n))


def class_accuracies(robust: np.ndarray, labels: np.ndarray, num_classes: int,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """Per-class robust accuracy of each run (and each bootstrap draw).

    ``robust``: bool ``(runs, n)``; ``weights``: ``(draws, n)`` image multiplicities of each draw
    (None: every image once). Returns ``(draws, runs, K)`` (``(1, runs, K)`` without weights); NaN
    for a class with no image in a draw.
    """
    onehot = np.eye(num_classes)[labels]                      # (n, K)
    w = np.ones((1, labels.size)) if weights is None else weights.astype(float)
    counts = w @ onehot                                       # (draws, K)
    runs = robust.shape[0]
    by_class = (robust.astype(float)[:, :, None] * onehot[None]).transpose(1, 0, 2).reshape(labels.size, -1)
    hits = (w @ by_class).reshape(len(w), runs, num_classes)  # one matrix product: (draws, n) x (n, runs*K)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / counts[:, None, :]


def bootstrap_draws(robust: np.ndarray, labels: np.ndarray, num_classes: int, draws: int = 2000, seed: int = 0,
                    stream: int = 0) -> dict[str, tuple[float, np.ndarray]]:
    """One group's bootstrap distribution of its average and worst-class robust accuracy.

    ``robust``: bool ``(runs, n)``, whether each image is robust under each of the group's runs (its
    training seeds). Each draw resamples the n images with replacement from ``seed`` alone, so every
    group drawn with the same ``seed`` (and n, draws) gets the same image draws: that is the pairing
    of :func:`paired_bootstrap`. It also resamples the group's runs with replacement, from its own
    ``stream`` (seeds are independent trainings). The statistic of a draw is the mean over the drawn
    runs of the class-averaged (``avg``) or the lowest per-class (``worst``) robust accuracy on the
    drawn images. Returns, per statistic, (the observed value, the ``draws`` bootstrap values).
    """
    robust = np.atleast_2d(robust).astype(bool)
    labels = np.asarray(labels)
    n, runs = labels.size, robust.shape[0]
    if robust.shape[1] != n:
        raise ValueError(f"per-image outcomes of {robust.shape[1]} images for {n} labels")
    image_rng, run_rng = np.random.default_rng(seed), np.random.default_rng([seed, stream])

    def stats(w: np.ndarray | None, chosen: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        acc = class_accuracies(robust, labels, num_classes, w)  # (draws, runs, K)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class no draw holds: NaN, left out
            avg, worst = np.nanmean(acc, axis=2), np.nanmin(acc, axis=2)  # (draws, runs)
        if chosen is not None:  # each draw's resampled runs
            avg, worst = np.take_along_axis(avg, chosen, 1), np.take_along_axis(worst, chosen, 1)
        return avg.mean(1), worst.mean(1)

    observed = stats(None, None)
    values: list[list[np.ndarray]] = [[], []]
    for start in range(0, draws, CHUNK):  # bounded memory: CHUNK x n image weights at a time
        size = min(CHUNK, draws - start)
        drawn = image_rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]  # n images with replacement
        weights = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)  # how often each is drawn
        chosen = run_rng.integers(0, runs, size=(size, runs))
        for i, v in enumerate(stats(weights, chosen)):
            values[i].append(v)
    return {key: (float(observed[i][0]), np.concatenate(values[i])) for i, key in enumerate(("avg", "worst"))}


def difference_interval(a: dict[str, tuple[float, np.ndarray]], b: dict[str, tuple[float, np.ndarray]],
                        level: float = 0.95) -> dict[str, dict[str, float]]:
    """A − B from two :func:`bootstrap_draws` of the same images and seed: the observed difference
    and the percentile interval of the paired differences, per statistic."""
    tail = (1 - level) / 2 * 100
    out = {}
    for key in ("avg", "worst"):
        low, high = np.percentile(a[key][1] - b[key][1], [tail, 100 - tail])
        out[key] = {"diff": a[key][0] - b[key][0], "low": float(low), "high": float(high)}
    return out


def paired_bootstrap(robust_a: np.ndarray, robust_b: np.ndarray, labels: np.ndarray, num_classes: int,
                     draws: int = 2000, seed: int = 0, level: float = 0.95,
                     streams: tuple[int, int] = (1, 2)) -> dict[str, dict[str, float]]:
    """Bootstrap intervals of A − B in average and worst-class robust accuracy (fractions).

    ``robust_a``: bool ``(runs_a, n)``, whether each image is robust under each run of group A (the
    runs: its training seeds), ``robust_b`` the same for group B, on the same ``n`` images in the
    same order with ``labels``. Each draw resamples the n images with replacement (one draw shared by
    both groups and all their runs: the pairing) and, independently per group, its runs with
    replacement (:func:`bootstrap_draws`). Returns, per statistic (``avg``, ``worst``), the observed
    difference and the percentile interval; seeded, so a report is reproducible.
    """
    return difference_interval(bootstrap_draws(robust_a, labels, num_classes, draws, seed, streams[0]),
                               bootstrap_draws(robust_b, labels, num_classes, draws, seed, streams[1]), level)


def pair_runs(seeds_a: Sequence[object], seeds_b: Sequence[object]) -> list[tuple[int, int]]:
    """Indices of the runs McNemar compares: runs with the same seed where both groups have it,
    else the runs in sorted-seed order, as many pairs as the smaller group has runs."""
    common = [s for s in seeds_a if s in seeds_b]
    if common:
        return [(list(seeds_a).index(s), list(seeds_b).index(s)) for s in common]
    order_a = sorted(range(len(seeds_a)), key=lambda i: str(seeds_a[i]))
    order_b = sorted(range(len(seeds_b)), key=lambda i: str(seeds_b[i]))
    return list(zip(order_a, order_b))
