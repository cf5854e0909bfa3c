"""Class-wise calibrated fair adversarial training (Wei et al., CVPR 2023), as in PKU-ML/CFA
(``train.py``, ``attack.py``: ``cw_pgd_loss``, ``cw_trades_loss``; ``utils.weight_average``).

t_k is class k's robust accuracy on the training adversarial examples of the previous epoch (the
train-mode logits of the loss's forward). From epoch ``begin`` + 1 on (1-based; the authors'
0-based ``epoch >= begin``):

- CCM, class-wise margin: class k is attacked with ε_k = (λ1 + t_k)·ε (the step is not scaled);
- CCR, class-wise regularisation (TRADES only, optional): β_k = (λ2 + t_k)·β.

The TRADES loss is per sample (1 − b)·CE(f(x), y) + b·KL(f(x) ‖ f(x')), b = β_y/(1 + β_y), i.e.
(CE + β_y·KL)/(1 + β_y), also without CCR; the AT loss is CE(f(x'), y).

FAWA, fairness-aware weight averaging: after each epoch, PGD on the validation split (attack.val)
measures the trained model's worst-class robust accuracy; when it is at least ``threshold``, the
averaged weights take θ (the first time) or become decay·avg + (1 − decay)·θ (whole state dict,
BatchNorm statistics included). The averaged model is what validation and test measure, and it is
saved beside the trained weights (``averaged_model.*`` in the checkpoint).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor

from .. import sync
from . import registry
from .classwise import ClassWiseMethod
from .objectives import LossWeights, PGDATObjective, TRADESObjective

# FAWA's worst-class threshold by base: 0.2 in the authors' README (AT), 0.24 their train.py default (TRADES)
DEFAULT_THRESHOLD = {PGDATObjective: 0.2, TRADESObjective: 0.24}


def cfa_margins(train_accuracy: Tensor, lambda1: float = 0.5) -> Tensor:
    """CCM: ε_k / ε = λ1 + t_k from class k's training robust accuracy t_k (no clipping)."""
    return lambda1 + train_accuracy


def cfa_betas(train_accuracy: Tensor, beta: float = 6.0, lambda2: float = 0.5) -> Tensor:
    """CCR: β_k = (λ2 + t_k)·β."""
    return (lambda2 + train_accuracy) * beta


def weight_average(averaged: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """averaged ← decay·averaged + (1 − decay)·model over the whole state dict (``weight_average``);
    integer buffers (BatchNorm's batch counter) take the model's value."""
    own = model.state_dict()
    with torch.no_grad():
        for name, value in averaged.state_dict().items():
            if value.is_floating_point():
                value.mul_(decay).add_(own[name].to(value.dtype), alpha=1 - decay)
            else:
                value.copy_(own[name])


class CFA(ClassWiseMethod):
    """CCM (and optionally CCR) on PGD-AT or TRADES, with FAWA.

    Args:
        base: ``trades`` (the authors' default mode) or ``pgd_at``.
        ccm, ccr: class-wise margin (on by default) and class-wise regularisation (TRADES only).
        lambda1, lambda2: λ1 and λ2 (authors: 0.5, 0.5).
        begin: the class-wise rules act once this many epochs have trained (authors: 10).
        fawa: average weights as above; ``threshold`` (``null``: 0.2 for pgd_at, 0.24 for trades)
            and ``decay`` (authors: 0.88).
    """

    source = "train_epoch"
    hparam_rules = {"lambda1": registry.NONNEGATIVE, "lambda2": registry.NONNEGATIVE, "begin": registry.EPOCH,
                    "threshold": registry.UNIT_OR_NULL, "decay": registry.UNIT}
    sync_checks = {"cfa": {"fawa": False, "begin": 1}}

    def __init__(self, *args, ccm: bool = True, ccr: bool = False, lambda1: float = 0.5, lambda2: float = 0.5,
                 begin: int = 10, fawa: bool = True, threshold: float | None = None, decay: float = 0.88,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if ccr and not self.base.has_kl:
            raise ValueError(f"method.ccr: CFA's class-wise regularisation weights TRADES' KL term; "
                             f"base={self.base.name} has none")
        threshold = DEFAULT_THRESHOLD[type(self.base)] if threshold is None else threshold
        self.ccm, self.ccr, self.fawa = bool(ccm), bool(ccr), bool(fawa)
        self.lambda1, self.lambda2, self.begin = float(lambda1), float(lambda2), int(begin)
        self.threshold, self.decay = float(threshold), float(decay)
        self.needs_val_split = self.fawa
        self.add_class_state("train_accuracy", 0.0)   # t_k of the last epoch
        self.add_class_state("eps_scale", 1.0)        # ε_k / ε
        self.add_class_state("class_beta", self.beta, log=self.base.has_kl)  # β_k
        # the TRADES loss (1 − b)·CE + b·KL holds β in b = β_y/(1 + β_y): its terms add unscaled
        self.base = dataclasses.replace(self.base, beta=1.0) if self.base.has_kl else self.base
        if self.fawa:
            self.averaged_model = copy.deepcopy(self.model).requires_grad_(False)
            self.register_buffer("fawa_started", torch.zeros((), dtype=torch.bool))
        self._fawa_epoch: int | None = None   # the epoch whose FAWA step ran (once per epoch)
        self._fawa_worst: float | None = None
        self._fawa_active = False             # fawa_started on the host: no read per evaluation batch

    # ---- CCM and CCR -------------------------------------------------------------------------
    def observe(self, y: Tensor, logits_adv: Tensor) -> None:
        self.record_training_examples(y, logits_adv)  # t_k for the next epoch's rules

    def eps_scale_for(self, y: Tensor) -> Tensor | None:
        """CCM: ε_y / ε = λ1 + t_y once calibrated, i.e. the 1-based epoch is past ``begin`` (the
        step is not scaled)."""
        return self.eps_scale[y] if self.ccm and self.epoch > self.begin else None

    def loss_weights_for(self, y: Tensor) -> LossWeights | None:
        """TRADES: (1 − b)·CE + b·KL per sample, b = β_y/(1 + β_y) (``cw_trades_loss``; β_y = β
        until CCR first acts). AT: CE(f(x'), y) unweighted (``cw_pgd_loss``)."""
        if not self.base.has_kl:
            return None
        b = self.class_beta[y]
        b = b / (1 + b)
        return LossWeights(ce=1 - b, kl=b)

    def after_epoch(self, epoch: int) -> None:
        accuracy = self.epoch_statistics()["accuracy"].nan_to_num(0.0)  # an unseen class: never attacked
        self.train_accuracy.copy_(accuracy)
        if epoch >= self.begin:  # the rules for epoch + 1 come from this epoch's accuracies
            if self.ccm:
                self.eps_scale.copy_(cfa_margins(accuracy, self.lambda1))
            if self.ccr:
                self.class_beta.copy_(cfa_betas(accuracy, self.beta, self.lambda2))
        if self.fawa and self._fawa_epoch != epoch:  # an epoch that ended before its last batch
            self.fawa_step(epoch)
        if self._fawa_worst is not None:
            self.log("cfa/fawa_worst_val_robust_acc", self._fawa_worst, sync_dist=False)
            self.log("cfa/fawa_started", float(self.fawa_started), sync_dist=False)

    # ---- FAWA --------------------------------------------------------------------------------
    @property
    def reported_weights(self) -> str:  # type: ignore[override]
        """The averaged model once FAWA has taken a model; the trained one before that."""
        return "averaged_model" if self.fawa and self._fawa_active else "model"

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # before Lightning's validation of this epoch, which measures the averaged model
        if self.fawa and batch_idx + 1 >= self.trainer.num_training_batches:
            self.fawa_step(self.epoch)

    def fawa_step(self, epoch: int) -> None:
        """One FAWA update after ``epoch``: the trained model's worst-class validation robust
        accuracy (attack.val) decides whether it enters the average."""
        def robust(x: Tensor, y: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
            x_adv = self.validation_attack(x, y, generator, phase="val")
            with torch.no_grad():
                return {"correct": (self.model(x_adv).argmax(1) == y).float()}

        sums, counts = self.validation_sums(robust, ("correct",), epoch)
        accuracy = torch.where(counts > 0, sums["correct"] / counts.clamp(min=1), torch.ones_like(counts))
        worst = float(sync.read(accuracy.min()))  # one host read per epoch; a class absent from the split: no vote
        self._fawa_epoch, self._fawa_worst = epoch, worst
        if worst < self.threshold:
            return
        weight_average(self.averaged_model, self.model, self.decay if self._fawa_active else 0.0)
        self.fawa_started.fill_(True)
        self._fawa_active = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        started = checkpoint.get("state_dict", {}).get("fawa_started")
        self._fawa_active = bool(started) if started is not None else False
