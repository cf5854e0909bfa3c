"""Balance Adversarial Training (Sun et al., AAAI 2023).

    L = CE(f(x_clean^Φ), y) + β·(1/m) Σ KL(f(x) ‖ f(x_adv^Φ))                   source-class loss
      + α·(1/m) Σ [KL(f(x_clean^Φ) ‖ U) + KL(f(x_adv^Φ) ‖ U)]                   target-class loss

(paper Eq. 7 with the authors' code for each term, docs/design.md §5.2). ``source`` and ``target``
give the paper's Table 2 ablations: ``source="fixed"`` trains on x and a 10-step PGD x_adv
(TRADES, Eq. 8); ``target`` names the examples pulled towards the uniform distribution.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attacks import boundary_pgd
from ..metrics import StepsToBoundary
from . import registry
from .base import AdversarialMethod
from .losses import kl_from_logits, kl_from_uniform, kl_to_uniform
from .objectives import trades_attack

UNIFORM_KL = {"model_to_uniform": kl_to_uniform, "uniform_to_model": kl_from_uniform}
SOURCES = ("boundary", "fixed")
TARGETS = ("last_clean", "first_adv", "x_adv")
ATTACK_LOSSES = ("kl", "ce")


class BAT(AdversarialMethod):
    """BAT's objective and its boundary examples.

    Args:
        alpha, beta: weights of the target-class and the KL term (authors: 1 and 6).
        tau: ``first_adv`` is the iterate at the (τ+1)-th misclassified evaluation (authors: 1).
        init_std: ξ of the attack's Gaussian start (authors: 0.001).
        attack_loss: the boundary trajectory ascends ``kl`` = KL(f(x) ‖ f(x_k)) (the authors' code)
            or ``ce`` = CE(f(x_k), y) (docs/design.md §5.1).
        uniform_kl: ``model_to_uniform`` = KL(f(·) ‖ U) (the authors' code, default) or
            ``uniform_to_model`` = KL(U ‖ f(·)) (the paper's Eq. 6).
        fused_forward: one train-mode forward over all example sets instead of one each (the
            authors' three separate forwards let BatchNorm see each set's own statistics).
        source: ``boundary`` (x_clean^Φ, x_adv^Φ) or ``fixed`` (x, PGD-K x_adv).
        target: which of ``last_clean``, ``first_adv``, ``x_adv`` the target-class loss uses.
        compact, early_exit: how :func:`~batlit.attacks.boundary_pgd` runs (same examples either way).
    """

    hparam_rules = {"alpha": registry.NONNEGATIVE, "beta": registry.NONNEGATIVE, "tau": registry.COUNT,
                    "uniform_kl": registry.one_of(UNIFORM_KL), "attack_loss": registry.one_of(ATTACK_LOSSES),
                    "source": registry.one_of(SOURCES),
                    "target": registry.Rule(f"among {', '.join(TARGETS)} (one, or a list)",
                                            lambda v: set([v] if isinstance(v, str) else v) <= set(TARGETS))}
    sync_checks = {"bat": {}, "bat_nosync": {"compact": False, "early_exit": False}}

    def __init__(
        self,
        *args,
        alpha: float = 1.0,
        beta: float = 6.0,
        tau: int = 1,
        init_std: float = 0.001,
        attack_loss: str = "kl",
        uniform_kl: str = "model_to_uniform",
        fused_forward: bool = False,
        source: str = "boundary",
        target: Sequence[str] = ("last_clean", "first_adv"),
        compact: bool = True,
        early_exit: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.alpha, self.beta, self.tau, self.init_std = float(alpha), float(beta), int(tau), float(init_std)
        self.attack_loss = attack_loss
        self.uniform_kl, self.fused_forward = UNIFORM_KL[uniform_kl], bool(fused_forward)
        self.source, self.target = source, (target,) if isinstance(target, str) else tuple(target)  # target=last_clean
        self.boundary_options = {"compact": bool(compact), "early_exit": bool(early_exit)}
        self.steps_to_boundary = StepsToBoundary(self.num_classes, self.train_attack["steps"])

    def perturb(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        examples = {"x": x}
        if self.source == "boundary" or {"last_clean", "first_adv"} & set(self.target):
            boundary = boundary_pgd(self.model, x, y, tau=self.tau, init_std=self.init_std, loss=self.attack_loss,
                                    **self.boundary_options, **self.train_attack)
            self.steps_to_boundary.update(boundary.steps, y)
            examples.update(last_clean=boundary.last_clean, first_adv=boundary.first_adv)
        if self.source == "fixed" or "x_adv" in self.target:
            # TRADES' attack, its start projected into the ε-ball and [0, 1] as BAT's examples always were
            examples["x_adv"] = trades_attack(self.model, x, y, init_std=self.init_std, project_start=True,
                                              **self.train_attack)
        return examples

    def objective(self, x: Tensor, y: Tensor, examples: dict[str, Tensor]) -> dict[str, Tensor]:
        z = self.logits(examples)
        if self.source == "boundary":
            natural, robust = F.cross_entropy(z["last_clean"], y), kl_from_logits(z["x"], z["first_adv"])
        else:
            natural, robust = F.cross_entropy(z["x"], y), kl_from_logits(z["x"], z["x_adv"])
        terms = {f"uniform_{name}": self.uniform_kl(z[name]) for name in self.target}
        target = sum(terms.values(), torch.zeros((), device=x.device))
        loss = natural + self.beta * robust + self.alpha * target
        return {"loss": loss, "natural": natural, "robust_kl": robust, "target": target, **terms}

    def logits(self, examples: dict[str, Tensor]) -> dict[str, Tensor]:
        """Train-mode logits of each example set: separate forwards (authors' order) or one fused."""
        names = [n for n in ("last_clean", "first_adv", "x", "x_adv") if n in examples]
        if self.fused_forward:
            chunks = self.model(torch.cat([examples[n] for n in names])).split(len(examples["x"]))
            return dict(zip(names, chunks))
        return {n: self.model(examples[n]) for n in names}

    def on_train_epoch_end(self) -> None:
        if not self.steps_to_boundary.update_count:
            return
        stats = self.steps_to_boundary.compute()
        self.log("train/steps_to_boundary", stats["mean"])
        self.log("train/never_misclassified", stats["never"])
        for name, value in zip(self.class_names, stats["mean_per_class"]):
            self.log(f"train/steps_to_boundary/{name}", value)
        self.steps_to_boundary.reset()
