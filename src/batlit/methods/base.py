"""The Lightning plumbing every adversarial-training method shares, written once.

A method subclass says only what is its own (docs/design.md §2.1):

- ``perturb(x, y)``: which examples its attack makes (run with the model in eval mode);
- ``objective(x, y, examples)``: its loss, as a dict of named terms with the total under ``"loss"``.

Validation and test run the evaluation attack of ``attack.val`` / ``attack.test`` and feed
:class:`~batlit.metrics.ClassWiseRobustness`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from ..attacks import attack_precision, pgd
from ..attacks._common import check_precision
from ..metrics import ClassWiseRobustness, ConfusionCounts
from . import registry
from ..vocab import OPTIMIZERS, SCHEDULERS

SUMMARY_KEYS = ("std_avg", "std_worst", "bndy_avg", "bndy_worst", "rob_avg", "rob_worst")


class StepDecay:
    """lr factor γ^(milestones passed), or ``factors[i]`` after the (i+1)-th milestone when given
    (FAT/GAIRAT: 0.1, 0.01, 0.005) — a MultiStepLR whose state is plain numbers.

    ``LambdaLR`` calls it with the number of finished epochs e (Lightning steps it after each
    epoch), i.e. for 1-based epoch e + 1. ``count_from`` says how the milestones count epochs:

    - 1: milestone m is the first 1-based epoch at the decayed lr: the ``if epoch >= m`` of the
      TRADES and BAT scripts, FAT's ``adjust_learning_rate(optimizer, epoch + 1)`` and GAIRAT's
      ``lr_schedule(epoch + 1)``;
    - 0: the decay starts after m epochs, in 1-based epoch m + 1: torch's ``MultiStepLR`` stepped
      after each epoch, as FRL's scripts do (``lr_scheduler.step(now_epoch)``, hannxu123/fair_robust).
    """

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1, factors: Sequence[float] | None = None,
                 count_from: int = 1) -> None:
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.factors = [float(f) for f in factors] if factors else None
        if self.factors is not None and len(self.factors) != len(self.milestones):
            raise ValueError(f"scheduler.factors needs one value per milestone, got {factors} for {milestones}")
        if isinstance(count_from, bool) or count_from not in (0, 1):
            raise ValueError(f"scheduler.count_from must be 1 (the lr drops at the start of epoch m) or 0 "
                             f"(after epoch m), got {count_from!r}")
        self.count_from = int(count_from)

    def __call__(self, epoch: int) -> float:
        # epoch = finished epochs; epoch + count_from numbers the running epoch as the milestones do
        passed = sum(epoch + self.count_from >= m for m in self.milestones)
        if self.factors is not None:
            return self.factors[passed - 1] if passed else 1.0
        return self.gamma ** passed


class AdversarialMethod(L.LightningModule):
    """Base class: a model, its training attack settings, its optimiser and the class-wise evaluation.

    Args:
        model: maps images in [0, 1] to logits and exposes ``num_classes``.
        attack: ``{"eps", "train": {steps, step_size}, "val": {...}, "test": {...}}`` (conf/attack).
        optimizer: ``{"name": "sgd"|"adam", "lr", "momentum", "weight_decay", ...}`` (conf/optimizer).
        scheduler: ``{"name": "multistep"|"cosine"|"onecycle"|"constant", ...}`` (conf/scheduler).
        class_names: shown in tables and logs.
        run_config: the composed run config; stored in every checkpoint so a run can be re-created.
    """

    needs_val_split = False  # a method that reads the validation split while training sets this
    # what the harness reads of a method class (batlit.methods.registry): the rules of its
    # method.<key> values, and its cases of python -m batlit.sync_check (name -> constructor kwargs)
    hparam_rules: dict[str, registry.Rule] = {}
    sync_checks: dict[str, dict[str, Any]] = {}

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        """A concrete method class of batlit joins :data:`~batlit.methods.registry.METHODS`;
        ``class X(AdversarialMethod, abstract=True)`` is a base to build on, not a method."""
        super().__init_subclass__(**kwargs)
        if not abstract and cls.__module__.startswith(f"{__package__}."):
            registry.register(cls)

    def __init__(
        self,
        model: nn.Module,
        attack: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # the whole subclass chain's arguments, checked by its declared hparam_rules (one line naming the key)
        self.save_hyperparameters(ignore=["model"])
        registry.check_hparams(type(self), self.hparams)
        self.model = model
        self.num_classes = int(model.num_classes)
        self.class_names = list(class_names) if class_names else [str(c) for c in range(self.num_classes)]
        self.eps = float(attack["eps"])  # the threat model: validation and test attacks
        train_eps = attack["train"].get("eps")  # the training attack's, when it differs (linf_trades)
        self.train_attack = {"eps": self.eps if train_eps is None else float(train_eps),
                             "steps": int(attack["train"]["steps"]), "step_size": float(attack["train"]["step_size"]),
                             "precision": str(attack["train"].get("precision", "auto"))}
        for phase in ("train", "val", "test"):  # one line before any forward pass, naming the key
            check_precision(str(attack.get(phase, {}).get("precision", "auto")), f"attack.{phase}.precision")
        self.val_metric = ClassWiseRobustness(self.num_classes)
        self.test_metric = ClassWiseRobustness(self.num_classes)
        # rows: true class, columns: prediction under the evaluation attack (target-class fairness);
        # counted without the host syncs of torchmetrics' bincount
        self.val_confusion = ConfusionCounts(self.num_classes)
        self.test_confusion = ConfusionCounts(self.num_classes)
        self.val_results: dict[str, Tensor] | None = None  # the latest validation, on the CPU
        self.test_results: dict[str, Tensor] | None = None

    # ---- what a method defines -------------------------------------------------------------
    def perturb(self, x: Tensor, y: Tensor) -> Any:
        """The examples the objective trains on (``None`` for clean training)."""
        raise NotImplementedError

    def objective(self, x: Tensor, y: Tensor, examples: Any) -> dict[str, Tensor]:
        """The method's loss: ``{"loss": total, <term>: value, ...}``."""
        raise NotImplementedError

    # ---- training ----------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The 1-based epoch being trained: the authors' scripts count epochs from 1."""
        return self.current_epoch + 1

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        examples = self.perturb(x, y)
        losses = self.objective(x, y, examples)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()},
                      on_step=False, on_epoch=True, prog_bar=False, batch_size=len(y))
        self.log("train/loss_step", losses["loss"].detach(), on_step=True, on_epoch=False, prog_bar=True)
        return losses["loss"]

    # ---- evaluation --------------------------------------------------------------------------
    reported_weights = "model"  # the state-dict prefix of the weights validation, test and load_run use

    def evaluated_model(self) -> nn.Module:
        """The network validation and test measure: the trained one, or an average of it (CFA's FAWA)."""
        return getattr(self, self.reported_weights)

    def evaluation_attack(self, x: Tensor, y: Tensor, phase: str) -> Tensor:
        """PGD on cross-entropy with a uniform start (docs/design.md §3; PGD-20 at test)."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError("the evaluation attack needs input gradients: build the Trainer with "
                               "inference_mode=False (trainer.inference_mode=false)")
        spec = self.hparams.attack[phase]
        return pgd(self.evaluated_model(), x, y, eps=self.eps, step_size=float(spec["step_size"]),
                   steps=int(spec["steps"]), loss=spec.get("loss", "ce"), init=spec.get("init", "uniform"),
                   precision=spec.get("precision", "auto"))

    def _robustness_step(self, batch: tuple[Tensor, Tensor], phase: str) -> None:
        x, y = batch
        x_adv = self.evaluation_attack(x, y, phase)
        model = self.evaluated_model()
        with torch.no_grad():
            adv_logits = model(x_adv)
            getattr(self, f"{phase}_metric").update(model(x), adv_logits, y)
            getattr(self, f"{phase}_confusion").update(adv_logits.argmax(1), y)

    def _robustness_results(self, phase: str) -> dict[str, Tensor] | None:
        """Compute and reset the phase's metrics; ``None`` when no batch was seen."""
        metric, confusion = getattr(self, f"{phase}_metric"), getattr(self, f"{phase}_confusion")
        results = None
        if metric.update_count:
            results = {**metric.compute(), "adv_confusion": confusion.compute()}
            results = {k: v.detach().cpu() for k, v in results.items()}
        metric.reset()
        confusion.reset()
        return results

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._robustness_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        # attack.test.precision (fp32 by default) covers the clean and adversarial forwards too:
        # the final numbers do not depend on trainer.precision (weights stay fp32 under mixed precision)
        precision = self.hparams.attack["test"].get("precision", "fp32")
        with attack_precision("fp32" if precision == "auto" else precision, batch[0].device.type):
            self._robustness_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        results = self._robustness_results("val")
        if results is not None:
            for key in SUMMARY_KEYS:
                self.log(f"val/{key}", results[key], prog_bar=key in ("rob_avg", "rob_worst"))
            if not self.trainer.sanity_checking:
                self.val_results = results

    def on_test_epoch_end(self) -> None:
        self.test_results = self._robustness_results("test")
        self.log_dict({f"test/{k}": self.test_results[k] for k in SUMMARY_KEYS})

    # ---- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt_cfg, params = dict(self.hparams.optimizer), self.model.parameters()
        name = opt_cfg.get("name", "sgd")
        if name == "sgd":
            optimizer = torch.optim.SGD(params, lr=opt_cfg["lr"], momentum=opt_cfg.get("momentum", 0.9),
                                        weight_decay=opt_cfg.get("weight_decay", 0.0),
                                        nesterov=opt_cfg.get("nesterov", False))
        elif name == "adam":
            optimizer = torch.optim.Adam(params, lr=opt_cfg["lr"], weight_decay=opt_cfg.get("weight_decay", 0.0))
        else:
            raise ValueError(f"optimizer.name must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
        sched_cfg = dict(self.hparams.scheduler or {"name": "constant"})
        kind = sched_cfg.get("name", "constant")
        if kind == "constant":
            return optimizer
        if kind == "multistep":
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, StepDecay(sched_cfg["milestones"], sched_cfg.get("gamma", 0.1), sched_cfg.get("factors"),
                                     sched_cfg.get("count_from", 1)))
            interval = "epoch"
        elif kind == "cosine":
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.trainer.max_epochs))
            interval = "epoch"
        elif kind == "onecycle":
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=opt_cfg["lr"], total_steps=int(self.trainer.estimated_stepping_batches),
                pct_start=sched_cfg.get("pct_start", 0.25))
            interval = "step"
        else:
            raise ValueError(f"scheduler.name must be one of {', '.join(SCHEDULERS)}, got {kind!r}")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": interval}}
