"""Loss pieces several methods share."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def kl_from_logits(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """(1/m) Σ_i KL(softmax(p_i) ‖ softmax(q_i)) — TRADES' ``KLDivLoss(size_average=False) / m``."""
    return F.kl_div(F.log_softmax(q_logits, dim=1), F.log_softmax(p_logits, dim=1),
                    reduction="batchmean", log_target=True)


def per_sample_kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """KL(softmax(p_i) ‖ softmax(q_i)) of each sample, summed over classes: the terms a class-wise
    weighting takes (the authors' ``KLDivLoss(reduction='none').sum(1)``)."""
    return F.kl_div(F.log_softmax(q_logits, dim=1), F.log_softmax(p_logits, dim=1),
                    reduction="none", log_target=True).sum(1)


def kl_to_uniform(logits: Tensor) -> Tensor:
    """(1/m) Σ_i KL(softmax(z_i) ‖ U) = log K − H(softmax(z_i)), averaged (the BAT authors' code)."""
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * log_p).sum(dim=1).mean() + math.log(logits.shape[1])


def kl_from_uniform(logits: Tensor) -> Tensor:
    """(1/m) Σ_i KL(U ‖ softmax(z_i)) = −log K − (1/K) Σ_k log p_ik, averaged (the paper's text)."""
    log_p = F.log_softmax(logits, dim=1)
    return (-log_p.mean(dim=1)).mean() - math.log(logits.shape[1])
