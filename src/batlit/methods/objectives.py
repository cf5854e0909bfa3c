"""The two objectives every method composes: PGD-AT's and TRADES' attack and loss.

- :class:`PGDATObjective` (Madry et al. 2018): CE(f(x'), y), x' from PGD on CE with a uniform start;
- :class:`TRADESObjective` (Zhang et al. 2019, yaodongyu/TRADES ``trades_loss``):
  CE(f(x), y) + β·KL(f(x) ‖ f(x')), x' from PGD on that KL from x + 0.001·N(0, I).

Each gives its attack, its batch loss as the authors write it (PGD-AT, TRADES, FAT), and its
per-sample terms with a class-wise or instance-wise weighting (:class:`LossWeights`: the
class-wise methods, GAIRAT). ``method.base: pgd_at | trades`` names one of them once
(:data:`BASES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import pgd
from .losses import kl_from_logits, per_sample_kl


def trades_logits(model: nn.Module, x: Tensor, x_adv: Tensor, *, fused: bool = False,
                  reuse_clean: bool = False, adv_first: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Train-mode logits ``(clean for CE, adversarial, clean as the KL target)``.

    By default in the authors' order, three forwards: yaodongyu/TRADES ``trades_loss`` computes
    ``logits = model(x_natural)`` for CE, then ``criterion_kl(F.log_softmax(model(x_adv)),
    F.softmax(model(x_natural)))``, whose arguments Python evaluates left to right; FRL's
    ``train_model`` (hannxu123/fair_robust ``utils_frl.py``) does the same. Loss and gradients equal
    the two-forward form's; BatchNorm's running statistics do not: each train-mode forward moves
    them by its momentum, so clean batches weigh about 2/3 of them here and about 1/2 with one
    clean forward, and they define the eval-mode model every attack and test number uses.

    ``reuse_clean``: one clean forward shared by both terms, two in all (clean, adversarial), as
    FAT_for_TRADES.py. ``fused``: one forward over ``cat([x, x_adv])``, BatchNorm normalising both
    together (changes the loss too; an option to measure, like BAT's ``fused_forward``).
    ``adv_first``: two forwards, adversarial then clean (rucy74/DAFA ``trades_loss``).
    """
    if fused:
        clean, adv = model(torch.cat([x, x_adv])).split(len(x))
        return clean, adv, clean
    if adv_first:
        adv = model(x_adv)
        clean = model(x)
        return clean, adv, clean
    clean = model(x)
    adv = model(x_adv)
    return clean, adv, (clean if reuse_clean else model(x))


def trades_attack(model: nn.Module, x: Tensor, y: Tensor, *, init_std: float, project_start: bool = False,
                  **budget: Any) -> Tensor:
    """TRADES' attack: PGD on KL(f(x) ‖ f(x')) from x + init_std·N(0, I) (``trades_loss``), whose
    start is not clamped before the first step (``project_start=False``, as the authors' TRADES,
    FRL, CFA, WAT, DAFA and FAAL). ``budget``: eps, step_size, steps, precision (and generator)."""
    return pgd(model, x, y, loss="kl", init="normal", init_std=init_std, project_start=project_start, **budget)


@dataclass(frozen=True)
class LossWeights:
    """Where a class-wise (or instance-wise) rule acts in the loss: per-sample weights, ``None`` for 1.

    - ``ce``: on the cross-entropy term, CE(f(x), y) in TRADES and CE(f(x'), y) in PGD-AT;
    - ``kl``: on TRADES' KL(f(x) ‖ f(x')) term;
    - ``normalise``: each term is Σ w·ℓ / Σ w instead of (1/B) Σ w·ℓ (FRL's ``cost_sensitive``);
    - ``sample``: on each sample's whole base loss ℓ_i instead, the loss being scale·(1/B) Σ w_i·ℓ_i (FAAL).
    """

    ce: Tensor | None = None
    kl: Tensor | None = None
    normalise: bool = False
    sample: Tensor | None = None
    scale: float = 1.0

    def reduce(self, weights: Tensor | None, values: Tensor) -> Tensor:
        if weights is None:
            return values.mean()
        if self.normalise:
            return (weights * values).sum() / weights.sum()
        return (weights * values).mean()


UNWEIGHTED = LossWeights()


class Objective:
    """An adversarial-training objective: its attack, its batch loss and its per-sample terms."""

    name: ClassVar[str]          # its method.base
    attack_loss: ClassVar[str]   # the loss its attack ascends (also FAT's early-stopped attack)
    attack_init: ClassVar[str]   # its attack's random start
    has_kl: ClassVar[bool]       # whether the loss has a KL term a class-wise rule can weight

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, **budget: Any) -> Tensor:
        """The training attack (eval mode) with ``budget``: eps, step_size, steps, precision (floats or
        one value per sample), optionally a generator."""
        raise NotImplementedError

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        """The unweighted batch loss from the train-mode forwards, as the authors write it."""
        raise NotImplementedError

    def terms(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        """Per-sample ``ce`` (and ``kl``) from the train-mode forwards, and ``logits_adv`` = f(x'),
        the train-mode logits a statistic of training examples reads."""
        raise NotImplementedError

    def sample_loss(self, terms: dict[str, Tensor]) -> Tensor:
        """ℓ_i: each sample's whole loss from its terms."""
        raise NotImplementedError

    def term_loss(self, terms: dict[str, Tensor], weights: LossWeights) -> dict[str, Tensor]:
        raise NotImplementedError

    def weighted_loss(self, terms: dict[str, Tensor], weights: LossWeights | None = None) -> dict[str, Tensor]:
        """The loss from per-sample terms under ``weights`` (``None``: every weight 1)."""
        weights = weights or UNWEIGHTED
        if weights.sample is None:
            return self.term_loss(terms, weights)
        per_sample = self.sample_loss(terms)
        return {"loss": weights.scale * (weights.sample * per_sample).mean(), "base_loss": per_sample.mean().detach()}


@dataclass(frozen=True)
class PGDATObjective(Objective):
    """min_θ E max_{‖δ‖∞≤ε} CE(f(x+δ), y): CE on PGD-K examples from a uniform random start."""

    name: ClassVar[str] = "pgd_at"
    attack_loss: ClassVar[str] = "ce"
    attack_init: ClassVar[str] = "uniform"
    has_kl: ClassVar[bool] = False

    @classmethod
    def from_options(cls, **options: Any) -> PGDATObjective:
        return cls()  # TRADES' options (β, ξ, forwards) have nothing to act on

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, **budget: Any) -> Tensor:
        return pgd(model, x, y, loss=self.attack_loss, init=self.attack_init, **budget)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        return {"loss": F.cross_entropy(model(x_adv), y)}

    def terms(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        logits_adv = model(x_adv)
        return {"ce": F.cross_entropy(logits_adv, y, reduction="none"), "logits_adv": logits_adv}

    def sample_loss(self, terms: dict[str, Tensor]) -> Tensor:
        return terms["ce"]

    def term_loss(self, terms: dict[str, Tensor], weights: LossWeights) -> dict[str, Tensor]:
        if weights.kl is not None:
            raise ValueError("PGD-AT's loss has no KL term to weight")
        return {"loss": weights.reduce(weights.ce, terms["ce"])}


@dataclass(frozen=True)
class TRADESObjective(Objective):
    """L = CE(f(x), y) + β·(1/m) Σ KL(f(x) ‖ f(x')),  x' = PGD on that KL from x + ξ·N(0, I).

    β = 1/λ (the paper compares β = 1 and β = 6); ξ = ``init_std`` (0.001). ``fused``,
    ``reuse_clean`` and ``adv_first`` choose the train-mode forwards (:func:`trades_logits`).
    """

    beta: float = 6.0
    init_std: float = 0.001
    fused: bool = False
    reuse_clean: bool = False
    adv_first: bool = False

    name: ClassVar[str] = "trades"
    attack_loss: ClassVar[str] = "kl"
    attack_init: ClassVar[str] = "normal"
    has_kl: ClassVar[bool] = True

    @classmethod
    def from_options(cls, *, beta: float, init_std: float, fused_forward: bool = False,
                     reuse_clean_logits: bool = False, adv_first: bool = False) -> TRADESObjective:
        return cls(beta=float(beta), init_std=float(init_std), fused=bool(fused_forward),
                   reuse_clean=bool(reuse_clean_logits), adv_first=bool(adv_first))

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, **budget: Any) -> Tensor:
        return trades_attack(model, x, y, init_std=self.init_std, **budget)

    def logits(self, model: nn.Module, x: Tensor, x_adv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return trades_logits(model, x, x_adv, fused=self.fused, reuse_clean=self.reuse_clean,
                             adv_first=self.adv_first)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        logits, logits_adv, target = self.logits(model, x, x_adv)
        natural = F.cross_entropy(logits, y)
        robust = kl_from_logits(target, logits_adv)
        return {"loss": natural + self.beta * robust, "natural": natural, "robust_kl": robust}

    def terms(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        logits, logits_adv, target = self.logits(model, x, x_adv)
        return {"ce": F.cross_entropy(logits, y, reduction="none"), "kl": per_sample_kl(target, logits_adv),
                "logits_adv": logits_adv}

    def sample_loss(self, terms: dict[str, Tensor]) -> Tensor:
        return terms["ce"] + self.beta * terms["kl"]

    def term_loss(self, terms: dict[str, Tensor], weights: LossWeights) -> dict[str, Tensor]:
        natural, robust = weights.reduce(weights.ce, terms["ce"]), weights.reduce(weights.kl, terms["kl"])
        return {"loss": natural + self.beta * robust, "natural": natural, "robust_kl": robust}


# method.base, the user-facing name of a class-wise method's objective, read once
BASES: dict[str, type[PGDATObjective] | type[TRADESObjective]] = {o.name: o for o in (PGDATObjective,
                                                                                        TRADESObjective)}
