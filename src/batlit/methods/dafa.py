"""Distance-aware fair adversarial training (Lee et al., ICLR 2024), as in rucy74/DAFA
(``train.py``, ``losses.py``, ``utils.calculate_class_weights``).

During the warm-up's last epoch the train-mode softmax of every training adversarial example is
summed per true class: P[i, j] is the mean probability class-i examples give class j. Once, after
that epoch, class weights W (from 1) follow from every ordered pair i ≠ j (the rule as corrected in
the authors' repository on 2024-09-02, commit 74657cd):

    P[i,i] < P[j,j]:  W_i += λ·P[i,j]·P[j,j]        (the harder class gains)
    otherwise:        W_i −= λ·P[j,i]·P[i,i]        (the easier class gives as much)

From the next epoch on, class y is attacked with ε_y = W_y·ε and step W_y·α, and the loss weights
its natural term: (1/B) Σ_i W_{y_i}·CE(f(x_i), y_i) + β·(1/B) Σ_i KL_i (TRADES), or
(1/B) Σ_i W_{y_i}·CE(f(x'_i), y_i) (``base=pgd_at``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import sync
from ..errors import ConfigError
from .classwise import ClassWiseMethod
from . import registry
from .objectives import LossWeights


def dafa_weights(confusion: Tensor, lam: float) -> Tensor:
    """Class weights W from the class-confusion matrix P (rows: true class, mean probabilities),
    with the corrected subtraction term; ties P[i,i] = P[j,j] subtract, as the authors' ``else``."""
    p = confusion.double()
    diag = p.diagonal()
    gain = p * diag[None, :]          # P[i,j]·P[j,j]
    give = p.t() * diag[:, None]      # P[j,i]·P[i,i]
    harder = diag[:, None] < diag[None, :]
    terms = torch.where(harder, gain, -give)
    terms.fill_diagonal_(0.0)
    return (1 + lam * terms.sum(dim=1)).to(confusion.dtype)


class DAFA(ClassWiseMethod):
    """TRADES (or PGD-AT) with class-wise ε, step and loss weights fixed after a warm-up.

    Args:
        lam: λ (authors: 1.0 for CIFAR-10, 1.5 for CIFAR-100).
        warmup_epoch: the 1-based epoch whose adversarial examples give P (authors: 70 of 110);
            W acts from the next epoch on.
        base: ``trades`` (default) or ``pgd_at``.

    The authors' TRADES forwards are two, adversarial then clean (``adv_first``).
    """

    source = "confusion"
    adv_first = True
    hparam_rules = {"lam": registry.NONNEGATIVE,  # (GAIRAT's λ may be negative)
                    "warmup_epoch": registry.AtMostEpochs("the class weights would never be computed "
                                                          "(set method.warmup_epoch <= epochs)")}
    sync_checks = {"dafa": {"warmup_epoch": 1}}

    def __init__(self, *args, lam: float = 1.0, warmup_epoch: int = 70, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lam, self.warmup_epoch = float(lam), int(warmup_epoch)
        self.add_class_state("weight", 1.0)           # W: 1 until the warm-up ends
        self.add_class_state("confusion_diag", 0.0)   # P[k, k] of the warm-up epoch

    def observe(self, y: Tensor, logits_adv: Tensor) -> None:
        if self.epoch == self.warmup_epoch:  # P comes from the warm-up's last epoch
            self.record_training_examples(y, logits_adv)

    def eps_scale_for(self, y: Tensor) -> Tensor | None:
        """ε_y / ε = α_y / α = W_y from the epoch after the warm-up."""
        return self.weight[y] if self.epoch > self.warmup_epoch else None

    # the step scales as ε does
    step_scale_for = eps_scale_for

    def loss_weights_for(self, y: Tensor) -> LossWeights:
        """W_y on the CE term: CE(f(x), y) for TRADES (its KL term unweighted), CE(f(x'), y) for AT;
        W = 1 until the warm-up ends."""
        return LossWeights(ce=self.weight[y])

    def after_epoch(self, epoch: int) -> None:
        if epoch != self.warmup_epoch:
            return
        confusion = self.epoch_statistics()["confusion"].nan_to_num(0.0)  # a class never seen: no pull
        weights = dafa_weights(confusion, self.lam)
        lowest, worst = sync.read(torch.stack([weights.min(), weights.argmin().to(weights.dtype)]))  # once per run
        if lowest <= 0:  # W scales the attack's budget and must stay positive
            raise ConfigError(f"method.lam: DAFA's weight for class {self.class_names[int(worst)]} is "
                              f"{lowest:.3f} <= 0 with lam={self.lam}; use a smaller lam")
        self.weight.copy_(weights)
        self.confusion_diag.copy_(confusion.diagonal())
