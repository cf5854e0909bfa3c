"""One class-wise mechanism for the robust-fairness methods (docs/design.md §9.5).

FRL, CFA, WAT, DAFA and FAAL differ in three things only. A method declares each; this base class
applies them:

(a) **the per-class statistic and its source** (``source``):

    - ``validation``: an attack on the validation split (FRL's errors, WAT's losses, CFA's FAWA
      check): :meth:`ClassWiseMethod.validation_sums`, sharded over DDP ranks and summed;
    - ``train_epoch``: the previous epoch's training adversarial examples, read from the loss's
      train-mode forward (CFA's class-wise robust accuracy): :meth:`observe` calls
      :meth:`record_training_examples`;
    - ``confusion``: one epoch's mean predicted probabilities per true class (DAFA);
    - ``batch``: the current batch (FAAL's margins), all-reduced under DDP
      (:meth:`batch_class_sums`), in :meth:`observe`;

(b) **its update**: :meth:`before_epoch` / :meth:`after_epoch` with the 1-based epoch, or
    :meth:`observe` for ``batch``;

(c) **where it acts**: ``eps_scale_for(y)`` and ``step_scale_for(y)`` (ε_y / ε and α_y / α per
    sample, ``None``: unchanged) give the attack's per-sample budget (:meth:`attack_budget`), and
    ``loss_weights_for(y)`` (a :class:`~batlit.methods.objectives.LossWeights`, ``None``: 1)
    weights the base objective's per-sample terms.

Everything per class lives in buffers registered with :meth:`add_class_state`: saved in every
checkpoint (a killed run resumes exactly, epoch accumulators included), identical on every DDP
rank (statistics are summed over ranks before an update), logged per class at every epoch end as
``classwise/<state>/<class>`` (CSV, W&B) and written to metrics.json for ``batlit.report``.

The base objective is ``method.base``, read once (:data:`~batlit.methods.objectives.BASES`):
``pgd_at``, CE on a PGD example from a uniform start, or ``trades``, CE(f(x)) + β·KL(f(x) ‖ f(x'))
with the KL attack from x + 0.001·N. A new class-wise method is one file with its rule and one
config (conf/method/).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ..attacks import eval_mode, pgd
from . import registry
from .base import AdversarialMethod
from .objectives import BASES, LossWeights, Objective

SOURCES = ("validation", "train_epoch", "confusion", "batch")


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over DDP ranks in place (a device collective, no host read); a no-op in one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def validation_seed(epoch: int, batch_index: int) -> int:
    """The random start of validation batch ``batch_index`` in epoch ``epoch``: a function of the
    batch, so the statistic does not depend on how many ranks share the split."""
    return 1_000_003 * int(epoch) + int(batch_index)


class ClassWiseMethod(AdversarialMethod, abstract=True):
    """Base of the class-wise methods: the statistic's source, its update and where it acts.

    Args:
        base: ``pgd_at`` or ``trades`` (a subclass may allow fewer: ``bases``).
        beta: TRADES' weight of the KL term (unused by ``pgd_at``).
        init_std: ξ of the TRADES attack's Gaussian start.
        fused_forward, reuse_clean_logits: TRADES' train-mode forwards
            (:func:`~batlit.methods.objectives.trades_logits`; the authors' three by default).
    """

    adv_first = False  # TRADES' forwards: adversarial before clean (DAFA's order)
    step_follows_eps = False  # step_scale_for scales ε, not attack.train.step_size (FRL: max_c ε_c / 4)

    source: str = "batch"                 # one of SOURCES: where the per-class statistic comes from
    bases: tuple[str, ...] = tuple(BASES)  # the bases this method has
    hparam_rules = {"beta": registry.NONNEGATIVE, "init_std": registry.NONNEGATIVE}

    def __init__(self, *args, base: str = "trades", beta: float = 6.0, init_std: float = 0.001,
                 fused_forward: bool = False, reuse_clean_logits: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if base not in self.bases:
            raise ValueError(f"method.base must be one of {', '.join(self.bases)} for {type(self).__name__}, "
                             f"got {base!r}")
        if self.source not in SOURCES:
            raise TypeError(f"{type(self).__name__}.source must be one of {SOURCES}")
        self.beta, self.init_std = float(beta), float(init_std)
        self.needs_val_split = self.source == "validation"  # checked by batlit.train before training starts
        self.base: Objective = BASES[base].from_options(beta=beta, init_std=init_std, fused_forward=fused_forward,
                                                        reuse_clean_logits=reuse_clean_logits,
                                                        adv_first=self.adv_first)
        self.class_state_names: list[str] = []
        k = self.num_classes
        if self.source in ("train_epoch", "confusion"):
            # the epoch's running sums: buffers, so a checkpoint taken mid-epoch holds them
            self.register_buffer("epoch_seen", torch.zeros(k))
            self.register_buffer("epoch_correct", torch.zeros(k))
            if self.source == "confusion":
                self.register_buffer("epoch_probs", torch.zeros(k, k))

    # ---- the per-class state -----------------------------------------------------------------
    def add_class_state(self, name: str, value: float | Tensor, log: bool = True) -> None:
        """A per-class buffer (checkpointed, the same on every rank): ``value`` for every class, or
        the tensor given; ``log``: per class each epoch."""
        value = value if isinstance(value, Tensor) else torch.full((self.num_classes,), float(value))
        self.register_buffer(name, value.clone().float())
        if log:
            self.class_state_names.append(name)

    def class_state(self) -> dict[str, list[float]]:
        """The logged per-class state as plain lists (metrics.json, ``batlit.report``)."""
        return {name: [float(v) for v in getattr(self, name).detach().cpu()] for name in self.class_state_names}

    def log_class_state(self) -> None:
        for name in self.class_state_names:
            values = getattr(self, name)
            names = self.class_names + ["avg"] if len(values) == self.num_classes + 1 else self.class_names
            for cls, value in zip(names, values):
                self.log(f"classwise/{name}/{cls}", value, sync_dist=False)

    # ---- when it updates ---------------------------------------------------------------------
    def before_epoch(self, epoch: int) -> None:
        """Update before 1-based ``epoch`` trains (FRL: from the validation split)."""

    def after_epoch(self, epoch: int) -> None:
        """Update after 1-based ``epoch`` trained (CFA, WAT, DAFA: for the next epoch)."""

    def observe(self, y: Tensor, logits_adv: Tensor) -> None:
        """Read a training batch's train-mode adversarial logits (the loss's forward): CFA's and
        DAFA's training examples, FAAL's margins."""

    def on_train_epoch_start(self) -> None:
        self.before_epoch(self.epoch)

    def on_train_epoch_end(self) -> None:
        self.after_epoch(self.epoch)
        self.log_class_state()

    # ---- where it acts -----------------------------------------------------------------------
    def eps_scale_for(self, y: Tensor) -> Tensor | None:
        """ε_y / ε for each sample of the batch (``None``: ε for all)."""
        return None

    def step_scale_for(self, y: Tensor) -> Tensor | None:
        """α_y / α for each sample (or one for all; ``None``: α). With ``step_follows_eps``, a
        fraction of ε instead."""
        return None

    def loss_weights_for(self, y: Tensor) -> LossWeights | None:
        """The weights of the base objective's per-sample terms (``None``: 1 each)."""
        return None

    def attack_budget(self, y: Tensor) -> tuple[float | Tensor, float | Tensor]:
        """(ε, step) of the training attack: floats, or one value per sample (class-wise)."""
        eps, step = self.train_attack["eps"], self.train_attack["step_size"]
        eps_scale, step_scale = self.eps_scale_for(y), self.step_scale_for(y)
        return (eps if eps_scale is None else eps * eps_scale,
                step if step_scale is None else (eps if self.step_follows_eps else step) * step_scale)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        """The base's attack (eval mode) with this method's class-wise budget."""
        eps, step = self.attack_budget(y)
        return self.base.attack(self.model, x, y, eps=eps, step_size=step, steps=self.train_attack["steps"],
                                precision=self.train_attack["precision"])

    def base_terms(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        """The base objective's per-sample terms from the train-mode forwards: ``ce`` (CE(f(x'), y)
        for ``pgd_at``, CE(f(x), y) for ``trades``), ``kl`` (``trades``: KL(f(x) ‖ f(x')) summed
        over classes) and ``logits_adv`` = f(x')."""
        return self.base.terms(self.model, x, y, x_adv)

    def objective(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        terms = self.base_terms(x, y, x_adv)
        self.observe(y, terms["logits_adv"])
        return self.base.weighted_loss(terms, self.loss_weights_for(y))

    # ---- sources: training examples ----------------------------------------------------------
    def record_training_examples(self, y: Tensor, logits_adv: Tensor) -> None:
        """Add a batch's train-mode adversarial predictions to the epoch's per-class sums (on the
        device, no host read): counts, correct predictions and, for ``confusion``, probabilities."""
        logits_adv = logits_adv.detach().float()
        self.epoch_seen.index_add_(0, y, torch.ones_like(y, dtype=self.epoch_seen.dtype))
        self.epoch_correct.index_add_(0, y, (logits_adv.argmax(1) == y).to(self.epoch_correct.dtype))
        if self.source == "confusion":
            self.epoch_probs.index_add_(0, y, F.softmax(logits_adv, 1))

    def epoch_statistics(self) -> dict[str, Tensor]:
        """The epoch's per-class statistics, summed over ranks, and the sums reset.

        ``accuracy[k]``: robust accuracy of class k's training examples (NaN for an unseen class);
        ``confusion[i, j]``: mean probability of class j over class i's examples (``confusion``).
        """
        names = ["epoch_seen", "epoch_correct"] + (["epoch_probs"] if self.source == "confusion" else [])
        sums = {n: all_reduce_sum(getattr(self, n).clone()) for n in names}
        seen = sums["epoch_seen"]
        stats = {"seen": seen, "accuracy": sums["epoch_correct"] / seen}
        if self.source == "confusion":
            stats["confusion"] = sums["epoch_probs"] / seen[:, None]
        for n in names:
            getattr(self, n).zero_()
        return stats

    # ---- sources: the current batch ----------------------------------------------------------
    def batch_class_sums(self, y: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Per-class sums of a batch's per-sample ``values`` and the per-class counts, summed over
        every DDP rank's batch (one collective, no host read)."""
        sums = torch.zeros(2, self.num_classes, device=y.device)
        sums[0].index_add_(0, y, values)
        sums[1].index_add_(0, y, torch.ones_like(values))
        total, counts = all_reduce_sum(sums)
        return total, counts

    # ---- sources: the validation split -------------------------------------------------------
    def validation_sums(self, per_sample: Callable[[Tensor, Tensor, torch.Generator], dict[str, Tensor]],
                        names: tuple[str, ...], epoch: int) -> tuple[dict[str, Tensor], Tensor]:
        """Per-class sums of the values ``per_sample(x, y, generator)`` returns under ``names``, over
        the validation split, and the per-class counts, with the model in eval mode.

        Under DDP each rank takes every world_size-th batch and the sums are all-reduced, so every
        rank gets the same statistic for 1/world_size of the work. Batch i's random start comes
        from :func:`validation_seed` (epoch, i), so the result does not depend on the world size
        beyond float summation order.
        """
        datamodule = self.trainer.datamodule
        loader = datamodule.val_dataloader() if datamodule is not None else None
        if not loader:
            raise ValueError(f"method: {type(self).__name__} reads a validation split; set data.val_size > 0")
        rank, world = int(self.global_rank), max(1, int(self.trainer.world_size))
        k, device = self.num_classes, self.device
        counts = torch.zeros(k, device=device)
        sums = {name: torch.zeros(k, device=device) for name in names}  # a rank without a batch still reduces
        with eval_mode(self.model):
            for i, (x, y) in enumerate(loader):
                if i % world != rank:
                    continue
                x, y = x.to(device), y.to(device)
                generator = torch.Generator(device=device).manual_seed(validation_seed(epoch, i))
                values = per_sample(x, y, generator)
                for name in names:
                    sums[name].index_add_(0, y, values[name].detach().float())
                counts.index_add_(0, y, torch.ones_like(y, dtype=counts.dtype))
        packed = all_reduce_sum(torch.stack([counts, *(sums[n] for n in names)]))
        return {n: packed[1 + j] for j, n in enumerate(names)}, packed[0]

    def validation_attack(self, x: Tensor, y: Tensor, generator: torch.Generator, phase: str = "test") -> Tensor:
        """PGD on CE from a uniform start with ``attack.<phase>``'s step and steps (FRL: test's
        PGD-20 as the authors; CFA's FAWA check: val's PGD-10)."""
        spec = self.hparams.attack[phase]
        return pgd(self.model, x, y, eps=self.eps, step_size=float(spec["step_size"]), steps=int(spec["steps"]),
                   loss="ce", init="uniform", generator=generator)


