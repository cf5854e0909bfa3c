"""Fairness-aware adversarial learning (Zhang et al., 2024), as in TrustAI/FAAL (``FAAL.py``
``DAW``, ``ft_prn.py``): fine-tune a robust model for a few epochs with class weights chosen per
batch by a distributionally robust step.

Per batch: adversarial examples as the base (PGD-AT's CE from a uniform start, or TRADES' KL);
per-sample probability margins m_i = max_{j≠y} p_j(x'_i) − p_{y_i}(x'_i) from the train-mode
adversarial logits; per class c_k = n_k·mean_{y_i=k} m_i (the authors' objective indexes the
weights by each sample's label, so a class counts with its batch count n_k); then

    p = argmax_p Σ_k c_k·p_k   s.t.  p ∈ simplex,  KL(U ‖ p) ≤ r,

solved in closed form (:func:`faal_weights`), and the loss (K/B)·Σ_i p_{y_i}·ℓ_i with ℓ_i the base's
per-sample loss (CE(f(x'), y), or CE(f(x), y) + β·KL for TRADES); p carries no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import registry
from .objectives import LossWeights
from .classwise import ClassWiseMethod
from .hot_start import HotStart

BISECTION_STEPS = 64  # on log(μ − max c) over 80 e-folds: far below float64 resolution of p


def kl_uniform_to(p: Tensor) -> Tensor:
    """KL(U ‖ p) = −log K − (1/K) Σ_k log p_k (last dimension)."""
    return -math.log(p.shape[-1]) - p.log().mean(-1)


def faal_weights(counts: Tensor, margins: Tensor, r: float) -> Tensor:
    """FAAL's class weights p: the maximiser of Σ_k c_k·p_k over the simplex with KL(U ‖ p) ≤ r,
    c_k = n_k·margin_k (0 for a class absent from the batch, whatever its margin).

    The optimum is p_k ∝ 1/(μ − c_k) with μ > max c such that KL(U ‖ p) = r (Lagrange
    stationarity; KL falls monotonically as μ grows, so μ is found by bisection). With d = μ − c,
    KL = mean log d + log mean(1/d) ≤ log(1 + spread/t) for t = μ − max c, so t = spread/(e^r − 1)
    is feasible and bounds the search. On the device, no host read: equal c_k (or r = 0) give U.
    """
    c = torch.where(counts > 0, counts.double() * margins.double(), torch.zeros((), dtype=torch.float64,
                                                                                 device=counts.device))
    k = c.numel()
    if r <= 0:
        return torch.full_like(c, 1 / k).to(margins.dtype)
    gap = c.max() - c          # μ − c_k = t + gap_k
    spread = gap.max()
    hi = (spread / math.expm1(r)).clamp(min=1e-300).log()
    lo = hi - 80.0

    def weights(log_t: Tensor) -> Tensor:
        inv = 1 / (log_t.exp() + gap)
        return inv / inv.sum()

    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        too_tight = kl_uniform_to(weights(mid)) > r   # t too small: p too far from uniform
        lo, hi = torch.where(too_tight, mid, lo), torch.where(too_tight, hi, mid)
    p = torch.where(spread > 0, weights(hi), torch.full_like(c, 1 / k))
    return p.to(margins.dtype)


def probability_margins(logits: Tensor, y: Tensor) -> Tensor:
    """m_i = max_{j≠y} p_j − p_y from logits (the authors' ``cw`` on softmax outputs)."""
    p = F.softmax(logits.float(), dim=1)
    true = p.gather(1, y[:, None]).squeeze(1)
    other = p.masked_fill(F.one_hot(y, p.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


class FAAL(HotStart, ClassWiseMethod):
    """Fine-tune ``init_ckpt`` with per-batch distributionally robust class weights.

    Args:
        r: the KL budget of the weights around uniform (authors' scripts: 0.5).
        base: ``pgd_at`` (the authors' scripts, for every pretrained model) or ``trades``.
    """

    source = "batch"
    adv_first = True  # base=trades: the authors' two forwards, f(x') then f(x)
    hparam_rules = {"r": registry.NONNEGATIVE}
    sync_checks = {"faal": {}}

    def __init__(self, *args, r: float = 0.5, base: str = "pgd_at", **kwargs) -> None:
        super().__init__(*args, base=base, **kwargs)
        self.r = float(r)
        self.add_class_state("weight", 1.0)                      # the epoch's mean of K·p
        self.register_buffer("weight_sum", torch.zeros(self.num_classes))
        self.register_buffer("weight_batches", torch.zeros(()))
        self.batch_weights: Tensor | None = None  # p of the batch being trained

    def class_weights(self, y: Tensor, logits_adv: Tensor) -> Tensor:
        """p for this batch, from the per-class margins of every DDP rank's batch."""
        total, counts = self.batch_class_sums(y, probability_margins(logits_adv.detach(), y))
        return faal_weights(counts, total / counts.clamp(min=1), self.r)

    def observe(self, y: Tensor, logits_adv: Tensor) -> None:
        p = self.class_weights(y, logits_adv)
        self.weight_sum.add_(self.num_classes * p.detach())
        self.weight_batches.add_(1)
        self.batch_weights = p

    def loss_weights_for(self, y: Tensor) -> LossWeights:
        """(K/B)·Σ_i p_{y_i}·ℓ_i, ℓ_i the base's per-sample loss; p carries no gradient."""
        return LossWeights(sample=self.batch_weights[y], scale=self.num_classes)

    def objective(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        return {**super().objective(x, y, x_adv), "weight_max": self.num_classes * self.batch_weights.max()}

    def after_epoch(self, epoch: int) -> None:
        self.weight.copy_(self.weight_sum / self.weight_batches.clamp(min=1))
        self.weight_sum.zero_()
        self.weight_batches.zero_()
