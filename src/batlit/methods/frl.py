"""Fair Robust Learning (Xu et al., ICML 2021), as in hannxu123/fair_robust (``frl_train``,
``cost_sensitive``, ``normalize_lambda``): fine-tune a robust model under per-class fairness
constraints, with Lagrange multipliers updated every epoch from the validation split.

Before each epoch, PGD on the validation split gives per-class clean errors e_nat,c and boundary
errors e_bndy,c; with the fairness bound τ, γ_c = e_c − e_total − τ and

    λ_nat  ← normalise(λ_nat + r1·γ_nat),    λ_bndy ← normalise(λ_bndy + 2·r1·γ_bndy),
    λ_eps  ← λ_eps + r2·γ_bndy              (normalise: clamp at 0, rescale to sum ≤ lim)

Reweight: class weights w_c = 1/K + λ_c − (1/K)·Σ_j λ_j for the clean and/or the boundary term
(a multiplier that weights no term is not updated and stays 0, as in the authors' scripts).
Remargin: class-wise ε_c = ε·clamp(exp(2·λ_eps,c), 0.98, margin_max), attack step max(ε_c)/4.
Loss = Σ w_nat·CE(f(x), y) / Σ w_nat + β·Σ w_bndy·KL(f(x) ‖ f(x_adv)) / Σ w_bndy, from three train-mode
forwards in ``train_model``'s order (clean for CE, adversarial, clean as the KL target).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import registry
from .objectives import LossWeights
from .classwise import ClassWiseMethod
from .hot_start import HotStart

REWEIGHT_TERMS = ("natural", "boundary")


def normalize_lambda(lam: Tensor, lim: float) -> Tensor:
    """Clamp at 0; rescale onto {Σ λ ≤ lim} when the sum exceeds it (``normalize_lambda``)."""
    lam = lam.clamp(min=0)
    total = lam.sum()
    return lam * (lim / total) if total > lim else lam


def class_weights(lam: Tensor) -> Tensor:
    """w_c = 1/K + λ_c − (1/K)·Σ_j λ_j (``cost_sensitive``)."""
    k = len(lam)
    return 1 / k + lam - lam.sum() / k


def class_margins(lam_eps: Tensor, margin_max: float) -> Tensor:
    """ε_c / ε = clamp(exp(2·λ_eps,c), 0.98, margin_max) (``cost_sensitive``)."""
    return torch.exp(2 * lam_eps).clamp(0.98, margin_max)


def reweight_terms(reweight: Any) -> tuple[str, ...]:
    """``method.reweight`` as the loss terms it class-weights: ``true`` both, ``false`` none, or a
    list of ``natural`` / ``boundary`` (FRL-Remargin's ``[natural]``, as the authors' frlrm.py)."""
    if isinstance(reweight, bool):
        return REWEIGHT_TERMS if reweight else ()
    terms = [reweight] if isinstance(reweight, str) else list(reweight or ())
    if any(t not in REWEIGHT_TERMS for t in terms):
        raise ValueError(f"method.reweight must be true, false or a list of {', '.join(REWEIGHT_TERMS)}, "
                         f"got {reweight!r}")
    return tuple(t for t in REWEIGHT_TERMS if t in terms)


class FRL(HotStart, ClassWiseMethod):
    """FRL-Reweight (``reweight``), -Remargin (``remargin``) or both.

    Args:
        reweight: the loss terms weighted by class: ``true`` (both: Reweight, Reweight+Remargin),
            ``[natural]`` (the authors' FRL-Remargin, frlrm.py with utils_frl1.py: λ_nat moves and
            weights CE, the boundary term stays uniform) or ``false``.
        remargin: class-wise ε from λ_eps.
        bound: the fairness bound τ on clean and boundary error gaps (paper: 0.05, 0.07).
        beta: weight of the boundary (KL) term (docs/design.md §6: 1.5).
        rate1, rate2: step sizes of the multiplier updates; rate1 halves every ``halve_every`` epochs.
        lim: the multipliers' simplex bound (0.5).
        margin_max: upper clamp of the ε factor.
        fused_forward, reuse_clean_logits: the train-mode forwards (:func:`~batlit.methods.objectives.trades_logits`;
            by default the authors' three).
    """

    source = "validation"    # the class-wise mechanism (classwise.py): errors on the validation split
    bases = ("trades",)
    step_follows_eps = True  # the authors' remargin step: max_c ε_c / 4
    hparam_rules = {"bound": registry.NONNEGATIVE, "rate1": registry.NONNEGATIVE, "rate2": registry.NONNEGATIVE,
                    "lim": registry.NONNEGATIVE}
    sync_checks = {"frl": {}}

    def __init__(self, *args, reweight: bool | str | list[str] = True, remargin: bool = True, bound: float = 0.05,
                 beta: float = 1.5, rate1: float = 0.05, rate2: float = 0.2, halve_every: int = 40,
                 lim: float = 0.5, margin_max: float = 3.0, **kwargs) -> None:
        super().__init__(*args, beta=beta, **kwargs)  # base: trades, the only one of FRL's bases
        self.reweight, self.remargin = reweight_terms(reweight), bool(remargin)
        if not (self.reweight or self.remargin):
            raise ValueError("method: FRL needs reweight and/or remargin")
        self.bound, self.rate1, self.rate2 = float(bound), float(rate1), float(rate2)
        self.halve_every, self.lim, self.margin_max = int(halve_every), float(lim), float(margin_max)
        # the multipliers: class-wise state, computed from the whole validation split (summed over
        # DDP ranks), so identical on every rank and saved in checkpoints
        for name in ("lambda_nat", "lambda_bndy", "lambda_eps"):
            self.add_class_state(name, 0.0)

    # ---- the multipliers ---------------------------------------------------------------------
    def update_multipliers(self, std_per_class: Tensor, bndy_per_class: Tensor, std_total: float | Tensor,
                           bndy_total: float | Tensor, epoch: int) -> None:
        """One FRL update from validation errors, for the 1-based ``epoch`` about to be trained."""
        r1 = self.rate1 / 2 ** (epoch // self.halve_every)
        gamma_nat = std_per_class - std_total - self.bound
        gamma_bndy = bndy_per_class - bndy_total - self.bound
        # a multiplier that weights nothing stays 0: frlrm.py comments out λ_bndy's update, frlrw.py λ_eps's
        if "natural" in self.reweight:
            self.lambda_nat.copy_(normalize_lambda(self.lambda_nat + r1 * gamma_nat, self.lim))
        if "boundary" in self.reweight:
            self.lambda_bndy.copy_(normalize_lambda(self.lambda_bndy + 2 * r1 * gamma_bndy, self.lim))
        if self.remargin:
            self.lambda_eps.add_(self.rate2 * gamma_bndy)

    def validation_errors(self, epoch: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-class and overall clean / boundary errors on the whole validation split (attack.test's
        PGD), on the device: the class-wise mechanism's ``validation`` source."""
        def errors(x: Tensor, y: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
            x_adv = self.validation_attack(x, y, generator)
            with torch.no_grad():
                clean_ok, adv_ok = self.model(x).argmax(1) == y, self.model(x_adv).argmax(1) == y
            return {"std": (~clean_ok).float(), "bndy": (clean_ok & ~adv_ok).float()}

        epoch = self.epoch if epoch is None else epoch
        sums, n = self.validation_sums(errors, ("std", "bndy"), epoch)
        seen = n.clamp(min=1)  # a class absent from the split weighs nothing in the overall errors
        return sums["std"] / seen, sums["bndy"] / seen, sums["std"].sum() / n.sum(), sums["bndy"].sum() / n.sum()

    def before_epoch(self, epoch: int) -> None:
        self.update_multipliers(*self.validation_errors(epoch), epoch=epoch)

    # ---- where it acts ----------------------------------------------------------------------
    def eps_scale_for(self, y: Tensor) -> Tensor | None:
        """Remargin: ε_c / ε = clamp(exp(2·λ_eps,c), 0.98, margin_max)."""
        return class_margins(self.lambda_eps, self.margin_max)[y] if self.remargin else None

    def step_scale_for(self, y: Tensor) -> Tensor | None:
        """Remargin: one step for all, max_c ε_c / 4 (``step_follows_eps``), as the authors'."""
        return class_margins(self.lambda_eps, self.margin_max).max().double() / 4 if self.remargin else None

    def sample_weights(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(w_nat, w_bndy) per sample; a term that is not reweighted gets the uniform 1/K."""
        uniform = torch.full((len(y),), 1 / self.num_classes, device=y.device)
        w_nat = class_weights(self.lambda_nat)[y] if "natural" in self.reweight else uniform
        w_bndy = class_weights(self.lambda_bndy)[y] if "boundary" in self.reweight else uniform
        return w_nat, w_bndy

    def loss_weights_for(self, y: Tensor) -> LossWeights:
        """Σ w_nat·CE / Σ w_nat + β·Σ w_bndy·KL / Σ w_bndy (``cost_sensitive``)."""
        w_nat, w_bndy = self.sample_weights(y)
        return LossWeights(ce=w_nat, kl=w_bndy, normalise=True)

    def objective(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        losses = super().objective(x, y, x_adv)  # the KL term is FRL's surrogate of the boundary error
        return {"loss": losses["loss"], "natural": losses["natural"], "boundary_kl": losses["robust_kl"]}
