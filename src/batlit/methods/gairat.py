"""Geometry-aware instance-reweighted AT (Zhang et al., ICLR 2021), as in
zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training (``GA_PGD``, ``GAIR.py``).

κ, the geometry value, counts the iterates x_0 … x_{K−1} of an un-stopped PGD that are still
classified correctly (a sample misclassified and then correct again counts again); samples close
to the boundary (small κ) get large weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..attacks import boundary_pgd
from . import registry
from .objectives import LossWeights
from .pgd_at import PGDAT

WEIGHT_FUNCTIONS = ("tanh", "sigmoid", "discrete")
SCHEDULES = ("fixed", "piecewise", "linear")


def gair_weights(kappa: Tensor, steps: int, lam: float, function: str = "tanh") -> Tensor:
    """Instance weights from κ, normalised to sum to the batch size (``GAIR.py``)."""
    half = steps // 2
    if function == "tanh":
        w = (torch.tanh(lam + (half - kappa) * 5 / half) + 1) / 2
    elif function == "sigmoid":
        w = torch.sigmoid(lam + (half - kappa) * 5 / half)
    elif function == "discrete":
        w = (steps + 1 - kappa) / (steps + 1)
    else:
        raise ValueError(f"method.weight_function must be one of {', '.join(WEIGHT_FUNCTIONS)}, got {function!r}")
    w = w.float()
    return w * len(w) / w.sum()


class GAIRAT(PGDAT):
    """L = (1/m) Σ w_i·CE(f(x_adv,i), y_i) after the burn-in epoch, plain CE on x_adv before it.

    Args:
        lam: λ of the weight function (authors: −1; ``inf`` gives uniform weights, i.e. PGD-AT).
        lam_schedule: ``fixed`` (authors' default); ``piecewise`` λ, λ−1, λ−1.5 from epochs 60, 90,
            110 and ``linear`` from ``lam_max`` down to λ, as the authors' code intends.
        lam_max: start of the linear schedule (must be finite for it).
        begin_epoch: the burn-in: weights apply from this (1-based) epoch on (authors: 60).
        weight_function: ``tanh`` (authors' default), ``sigmoid`` or ``discrete``.
    """

    hparam_rules = {"lam": registry.Rule("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
                    "lam_schedule": registry.one_of(SCHEDULES), "weight_function": registry.one_of(WEIGHT_FUNCTIONS),
                    "begin_epoch": registry.EPOCH}
    sync_checks = {"gairat": {"begin_epoch": 1}}

    def __init__(self, *args, lam: float = -1.0, lam_schedule: str = "fixed", lam_max: float = math.inf,
                 begin_epoch: int = 60, weight_function: str = "tanh", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if lam_schedule == "linear" and not math.isfinite(lam_max):
            raise ValueError(f"method.lam_max must be finite for the linear schedule, got {lam_max}")
        if weight_function != "discrete" and self.train_attack["steps"] < 2:
            raise ValueError(f"attack.train.steps must be >= 2 for GAIRAT's {weight_function} weights "
                             f"(they divide by steps // 2), got {self.train_attack['steps']}")
        self.lam, self.lam_schedule, self.lam_max = float(lam), lam_schedule, float(lam_max)
        self.begin_epoch, self.weight_function = int(begin_epoch), weight_function

    def lam_at(self, epoch: int) -> float:
        """λ at a 1-based epoch (after the burn-in; before it the loss is unweighted)."""
        if self.lam_schedule == "piecewise":
            return self.lam - (1.5 if epoch >= 110 else 1.0 if epoch >= 90 else 0.0)
        if self.lam_schedule == "linear":
            return self.lam_max - epoch / self.trainer.max_epochs * (self.lam_max - self.lam)
        return self.lam

    def perturb(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        # GA-PGD: all K steps, nothing stops (tau >= K), no host sync; kappa counts correct iterates.
        out = boundary_pgd(self.model, x, y, tau=self.train_attack["steps"], loss="ce", init="uniform",
                           compact=False, early_exit=False, **self.train_attack)
        return out.first_adv, out.correct_iterates

    def objective(self, x: Tensor, y: Tensor, examples: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        x_adv, kappa = examples
        terms = self.base.terms(self.model, x, y, x_adv)  # per-sample CE(f(x_adv), y)
        if self.epoch < self.begin_epoch:
            return {**self.base.weighted_loss(terms), "kappa": kappa.float().mean()}
        weights = gair_weights(kappa, self.train_attack["steps"], self.lam_at(self.epoch), self.weight_function)
        return {**self.base.weighted_loss(terms, LossWeights(ce=weights)), "kappa": kappa.float().mean(),
                "weight_max": weights.max()}
