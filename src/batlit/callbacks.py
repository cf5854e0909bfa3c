"""Lightning callbacks batlit adds to a run.

:class:`EpochSeeding` reseeds every random stream at the start of each training epoch from
(seed, epoch), so a run resumed from an epoch-end checkpoint replays exactly what an
uninterrupted run does (the data order, augmentations and attack starts of every later epoch).
:class:`NonFiniteLossGuard` stops training at the first NaN/inf loss, before the step corrupts
the weights, naming epoch and step; the last checkpoint on disk stays the last good one.
:class:`WandbReports` turns each validation and the test into W&B charts: a per-class bar chart
of the robust error, a table of the per-class standard / boundary / robust errors (with avg and
worst rows) and the adversarial confusion matrix; at test it also fills the run summary.
Scalars (``train/*``, ``val/*``, ``test/*``) reach W&B through Lightning's WandbLogger like any
other logger.
"""

from __future__ import annotations

from typing import Any, Sequence

import lightning as L

from . import sync
from .config import UserError
from .report.results import METRICS, results_to_json


class NonFiniteLossError(UserError):
    kind = "training error"
    exit_code = 1


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one training epoch on one process; rank 0's is the single-process seed."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(rank) * 104_729 + 17) % (2**31 - 1)


class EpochSeeding(L.Callback):
    """Seed torch (CPU and CUDA), numpy and random from (seed, epoch, rank) before each training epoch.

    The rank keeps DDP processes from drawing the same crops, flips and attack noise at the same
    batch positions of their different shards; a function of (seed, epoch, rank) keeps resume exact.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        L.seed_everything(epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank), workers=True,
                          verbose=False)


class EpochThroughput(L.Callback):
    """Log ``perf/epoch_seconds`` and ``perf/train_images_per_s`` for every training epoch.

    Wall-clock of the training part of the epoch (data, attack, objective, optimiser step), with
    the epoch-end validation subtracted and one device sync at each end so queued GPU work is
    counted. Under DDP the figures are rank 0's (its shard of each batch).
    """

    def __init__(self) -> None:
        self.start: float | None = None
        self.paused = 0.0
        self.pause_start: float | None = None
        self.images = 0

    @staticmethod
    def _now(pl_module: Any) -> float:
        import time

        import torch

        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.start, self.paused, self.images = self._now(pl_module), 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.images += len(batch[1])

    def on_validation_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.start is not None and not trainer.sanity_checking:
            self.pause_start = self._now(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.pause_start is not None:
            self.paused += self._now(pl_module) - self.pause_start
            self.pause_start = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.start is None or not self.images:
            return
        seconds = self._now(pl_module) - self.start - self.paused
        pl_module.log_dict({"perf/epoch_seconds": seconds, "perf/train_images_per_s": self.images / seconds},
                           on_epoch=True, rank_zero_only=True)
        self.start = None


class NonFiniteLossGuard(L.Callback):
    """Stop the run with :class:`NonFiniteLossError` when the training loss is NaN or infinite.

    The check is recorded on the loss's device each step (the first bad step, its batch and its
    loss) and read back, one host sync, every ``check_every`` steps and at the end of every training
    epoch, before that epoch's checkpoint is written: so ``last.ckpt`` is never a corrupted model.
    ``check_every`` defaults to 1 on the CPU (reading back costs nothing, and the run stops before
    the bad step's update) and to 50 on a GPU, where a per-step read would stall the queue.
    """

    def __init__(self, checkpoint_dir: Any = None, check_every: int | None = None) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.check_every = check_every
        self.batch_idx = 0
        self.first_bad = None  # on the loss's device: (global step, batch of the epoch, loss), step -1 if none

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: Any, loss: Any) -> None:
        import torch

        loss = loss.detach()

        def filled(value: float) -> Any:  # a fill on the device, not a host-to-device copy of a list
            return torch.full((), value, dtype=torch.float64, device=loss.device)

        if self.first_bad is None or self.first_bad.device != loss.device:
            self.first_bad = torch.stack([filled(-1.0), filled(-1.0), filled(0.0)])
        here = torch.stack([filled(float(trainer.global_step)), filled(float(self.batch_idx)), loss.double().sum()])
        new = ~torch.isfinite(loss).all() & (self.first_bad[0] < 0)
        self.first_bad = torch.where(new, here, self.first_bad)
        every = self.check_every or (1 if loss.device.type == "cpu" else 50)
        if trainer.global_step % every == 0 or every == 1:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._check(trainer)  # callbacks run before ModelCheckpoint: a bad epoch is never saved

    def _check(self, trainer: L.Trainer) -> None:
        if self.first_bad is None:
            return

        step, batch, value = sync.read(self.first_bad)  # the one host sync
        if step < 0:
            return
        from pathlib import Path

        last = Path(self.checkpoint_dir) / "last.ckpt" if self.checkpoint_dir else None
        kept = (f"; the last good checkpoint is {last}" if last is not None and last.is_file()
                else "; no checkpoint was written before it")
        raise NonFiniteLossError(
            f"non-finite training loss ({value}) at epoch {trainer.current_epoch}, "
            f"step {int(step)} (batch {int(batch)} of the epoch); training stopped{kept}. "
            "Lower optimizer.lr or check the data")


def wandb_runs(loggers: Sequence[Any]) -> list[Any]:
    """The W&B runs behind the Lightning loggers (empty when no WandbLogger is used)."""
    from lightning.pytorch.loggers import WandbLogger

    return [lg.experiment for lg in loggers if isinstance(lg, WandbLogger)]


def per_class_rows(summary: dict[str, Any], class_names: Sequence[str]) -> list[list[Any]]:
    """Rows ``[class, n, std %, bndy %, rob %]``, then ``avg`` and ``worst``."""
    def pct(v: float | None) -> float | None:
        return None if v is None else round(100 * v, 4)

    rows = [[name, summary["count_per_class"][i], *(pct(summary[f"{k}_per_class"][i]) for k, _ in METRICS)]
            for i, name in enumerate(class_names)]
    rows.append(["avg", sum(summary["count_per_class"]), *(pct(summary[f"{k}_avg"]) for k, _ in METRICS)])
    rows.append(["worst", None, *(pct(summary[f"{k}_worst"]) for k, _ in METRICS)])
    return rows


class WandbReports(L.Callback):
    """Per-class charts and the adversarial confusion matrix in W&B at validation and test."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "val", pl_module.val_results)

    def on_test_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        runs = self._log(trainer, pl_module, "test", pl_module.test_results)
        summary = results_to_json(pl_module.test_results, pl_module.class_names)
        for run in runs:
            run.summary.update({f"test/{k}": v for k, v in summary.items()
                                if not k.endswith(("_per_class",)) and k not in ("adv_confusion", "count_per_class")})

    def _log(self, trainer: L.Trainer, pl_module: Any, phase: str, results: dict | None) -> list[Any]:
        runs = wandb_runs(trainer.loggers) if trainer.is_global_zero else []
        if not runs or results is None:
            return []
        import wandb

        names = pl_module.class_names
        summary = results_to_json(results, names)
        table = wandb.Table(columns=["class", "n", "std_error", "bndy_error", "rob_error"],
                            data=per_class_rows(summary, names))
        per_class = wandb.Table(columns=["class", "rob_error"],
                                data=[[n, r[4]] for n, r in zip(names, table.data)])
        confusion = summary["adv_confusion"]
        cells = wandb.Table(columns=["Actual", "Predicted", "nPredictions"],
                            data=[[names[i], names[j], confusion[i][j]]
                                  for i in range(len(names)) for j in range(len(names))])
        charts = {
            f"{phase}/per_class_table": table,
            f"{phase}/per_class_rob_error": wandb.plot.bar(
                per_class, "class", "rob_error", title=f"{phase}: robust error per class (%)"),
            f"{phase}/adv_confusion": wandb.plot_table(
                "wandb/confusion_matrix/v1", cells,
                {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                {"title": f"{phase}: adversarial confusion (true x predicted)"}),
            "trainer/global_step": trainer.global_step,
        }
        for run in runs:
            run.log(charts)
        return runs


def finish_wandb(loggers: Sequence[Any]) -> None:
    """End the W&B run, so that the next job of a multirun starts its own."""
    for run in wandb_runs(loggers):
        run.finish()
