"""TRADES (Zhang et al. 2019), as in yaodongyu/TRADES ``trades_loss``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import pgd
from .base import AdversarialMethod
from .losses import kl_from_logits


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


class TRADES(AdversarialMethod):
    """L = CE(f(x), y) + β·(1/m) Σ KL(f(x) ‖ f(x_adv)),  x_adv = PGD on that KL from x + 0.001·N(0, I).

    β = 1/λ; the paper compares β = 1 and β = 6. ``fused_forward`` / ``reuse_clean_logits`` choose
    the train-mode forwards (:func:`trades_logits`; the authors' three by default).
    """

    def __init__(self, *args, beta: float = 6.0, init_std: float = 0.001, fused_forward: bool = False,
                 reuse_clean_logits: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.beta, self.init_std = float(beta), float(init_std)
        self.fused_forward, self.reuse_clean_logits = bool(fused_forward), bool(reuse_clean_logits)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        # trades_loss: x + 0.001·N is not clamped before the first step
        return pgd(self.model, x, y, loss="kl", init="normal", init_std=self.init_std, project_start=False,
                   **self.train_attack)

    def objective(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        logits, logits_adv, target = trades_logits(self.model, x, x_adv, fused=self.fused_forward,
                                                   reuse_clean=self.reuse_clean_logits)
        natural = F.cross_entropy(logits, y)
        robust = kl_from_logits(target, logits_adv)
        return {"loss": natural + self.beta * robust, "natural": natural, "robust_kl": robust}
