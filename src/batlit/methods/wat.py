"""Worst-class adversarial training (Li & Liu, AAAI 2023), as in boqili/WAT
(``worst_class_adversarial_train.py``: ``train``, ``validate``).

K + 1 "experts", one per class and one for the average, with cumulative validation losses C
(all 0 at the start, weights all 1). After every epoch, the TRADES loss CE(f(x), y) + β·KL(f(x) ‖
f(x')) of the validation split (TRADES' KL attack, eval mode) gives L_k per class and L_K over all
samples; then

    C ← C + L,    w = K·softmax(η·C)   (over the K + 1 entries, which sum to K)

and the next epochs train on (1/B) Σ_i (w_{y_i} + w_K)·[CE(f(x_i), y_i) + β·KL_i].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import registry
from .classwise import ClassWiseMethod
from .losses import per_sample_kl
from .objectives import LossWeights


def wat_weights(cumulative_loss: Tensor, eta: float) -> Tensor:
    """w = K·softmax(η·C) over the K + 1 cumulative losses (K classes, then the average): the K + 1
    weights sum to K, as the authors' ``class_factor`` normalisation."""
    k = cumulative_loss.numel() - 1
    return k * torch.softmax(eta * cumulative_loss, dim=0)


class WAT(ClassWiseMethod):
    """TRADES with no-regret class weights from cumulative validation losses.

    Args:
        eta: η of the exponential weights (authors: 0.1).
        beta: TRADES' β, in the loss and in the validation statistic (authors: 6).

    The authors' two train-mode forwards (clean, then adversarial) are the default
    (``reuse_clean_logits: true``).
    """

    source = "validation"
    bases = ("trades",)
    hparam_rules = {"eta": registry.NONNEGATIVE}
    sync_checks = {"wat": {}}

    def __init__(self, *args, eta: float = 0.1, reuse_clean_logits: bool = True, **kwargs) -> None:
        super().__init__(*args, reuse_clean_logits=reuse_clean_logits, **kwargs)
        self.eta = float(eta)
        k = self.num_classes
        self.add_class_state("cumulative_loss", torch.zeros(k + 1))  # C: K classes, then the average
        self.add_class_state("weight", torch.ones(k + 1))            # w: the authors start at all ones

    def validation_losses(self, epoch: int) -> Tensor:
        """L: per-class mean TRADES loss on the validation split, then the overall mean."""
        def trades_loss(x: Tensor, y: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
            # the training attack (TRADES' KL from x + 0.001·N) on validation images, seeded
            x_adv = self.base.attack(self.model, x, y, generator=generator, **self.train_attack)
            with torch.no_grad():
                logits, logits_adv = self.model(x), self.model(x_adv)
                terms = {"ce": F.cross_entropy(logits, y, reduction="none"), "kl": per_sample_kl(logits, logits_adv)}
                return {"loss": self.base.sample_loss(terms)}

        sums, counts = self.validation_sums(trades_loss, ("loss",), epoch)
        per_class = sums["loss"] / counts.clamp(min=1)  # a class absent from the split: 0, as the authors' sums
        return torch.cat([per_class, (sums["loss"].sum() / counts.sum()).view(1)])

    def after_epoch(self, epoch: int) -> None:
        self.cumulative_loss.add_(self.validation_losses(epoch))
        self.weight.copy_(wat_weights(self.cumulative_loss, self.eta))

    def loss_weights_for(self, y: Tensor) -> LossWeights:
        """w_{y_i} + w_K on both TRADES terms of sample i."""
        weights = self.weight[y] + self.weight[-1]
        return LossWeights(ce=weights, kl=weights)

    def objective(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        return {**super().objective(x, y, x_adv), "weight_max": self.loss_weights_for(y).ce.max()}
