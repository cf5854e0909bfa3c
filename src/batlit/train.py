"""Train a method and evaluate it class-wise: ``python -m batlit.train [overrides]``.

Examples::

    python -m batlit.train experiment=quickstart
    python -m batlit.train method=trades data=cifar10 model=resnet18 method.beta=6
    python -m batlit.train -m method=trades method.beta=1,6

Writes into the Hydra run directory: ``metrics.json``, ``checkpoints/last.ckpt``, the composed
config (``config.yaml`` and ``.hydra/``) and the logger's files.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from .config import ConfigError, exit_on_user_error, register_resolvers, validate
from .report.results import format_table, results_to_json
from .safe_io import atomic_write_text

register_resolvers()
log = logging.getLogger("batlit")


def _quiet_lightning() -> None:
    """Keep the console to what a user acts on."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*does not have many workers.*", ".*is smaller than the logging interval.*",
                    ".*Total length of .* across ranks is zero.*", ".*treespec, LeafSpec.*",
                    # on resume: keep_csv_history writes the earlier epochs back, last.ckpt is expected
                    ".*Previous log files in this directory will be deleted.*",
                    ".*Checkpoint directory .* exists and is not empty.*"):
        warnings.filterwarnings("ignore", message)


def _instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with a user's bad argument reported as one line naming the group."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, ConfigError):  # already one line naming its key
            raise cause from err
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(f"{key}: {cause}") from err
        raise


def picked_name(cfg: DictConfig) -> str:
    return choices().get("method") or cfg.method._target_


def choices() -> dict[str, str]:
    """The option chosen in each config group (method, data, model, ...)."""
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Everything after config composition; returns the test summary (also written to metrics.json)."""
    validate(cfg)  # before the heavy imports: a typo costs a second, not a model
    check_objective(cfg)
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, Timer

    from .callbacks import EpochSeeding, EpochThroughput, NonFiniteLossGuard, WandbReports, finish_wandb
    from .checkpoint.hot_start import HotStartSplitCheck, load_hot_start
    from .checkpoint.record import BatlitRecord
    from .checkpoint.store import (AtomicCheckpointIO, check_resumable, keep_csv_history, read_batlit_checkpoint,
                                   storable_run_config)

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    ckpt_path = resume_path(cfg, run_dir)
    resume_key = "ckpt_path" if cfg.get("ckpt_path") else "resume"
    if ckpt_path is not None:
        check_resumable(ckpt_path, cfg, resume_key)  # before data and model: a wrong checkpoint costs a second
    if cfg.method.get("init_ckpt"):  # FRL's hot start: a checkpoint from elsewhere is checked first
        read_batlit_checkpoint(str(cfg.method.init_ckpt), "method.init_ckpt")
    check_method_options(cfg)  # before data: a bad method option costs a second, not a dataset load
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = _instantiate(cfg.data, "data")
    try:  # reading the files: a bad image, an empty class folder, a corrupt zip -> one line
        datamodule.prepare_data()
        datamodule.setup("fit")
    except ValueError as err:
        raise ConfigError(f"data: {err}") from err
    with open_dict(cfg):
        if cfg.data.get("num_classes") is None:
            cfg.data.num_classes = datamodule.num_classes
    validate(cfg)  # now that data.num_classes is known, model and data must agree
    if ckpt_path is not None:
        check_resumable(ckpt_path, cfg, resume_key)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra made it, unless run() is called directly
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))  # a link there is replaced

    model = _instantiate(cfg.model, "model")
    if cfg.get("compile"):
        compile_model(model)
    method = build_method(cfg, model, class_names=list(datamodule.class_names),
                          run_config=storable_run_config(OmegaConf.to_container(cfg, resolve=True)))
    # a fine-tuning method (FRL, FAAL) starts from init_ckpt's reported weights, read here, not by the method
    hot_start = load_hot_start(method, str(cfg.method.init_ckpt)) if getattr(method, "fine_tunes", False) else None
    if method.needs_val_split and not datamodule.val_dataloader():
        raise ConfigError(f"data.val_size: method {picked_name(cfg)} needs a validation split; set data.val_size > 0")
    loggers = [hydra.utils.instantiate(node) for node in (cfg.get("logger") or {}).values()]
    if ckpt_path is not None:
        keep_csv_history(loggers, ckpt_path)
    # checkpoints/last.ckpt after every epoch (atomically replaced): what resume=true continues from
    callbacks = [ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                                 every_n_epochs=1, save_on_train_epoch_end=True, enable_version_counter=False),
                 EpochSeeding(cfg.seed), EpochThroughput(),
                 # fit's wall time, kept in last.ckpt across resumes (metrics.json wall_seconds); with
                 # trainer.max_time it also ends training there (Lightning ignores max_time beside a Timer)
                 Timer(duration=OmegaConf.select(cfg, "trainer.max_time", default=None), verbose=False)]
    if cfg.get("stop_on_nonfinite_loss", True):
        callbacks.append(NonFiniteLossGuard(run_dir / "checkpoints"))
    if wandb_runs_possible(loggers):
        callbacks.append(WandbReports())
    if hot_start is not None:
        callbacks.append(HotStartSplitCheck(hot_start))
    callbacks += [_instantiate(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items()]
    callbacks.append(BatlitRecord())  # last: checkpoint["batlit"] is added where the method's hook added it
    trainer = _instantiate(cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks,
                           plugins=trainer_plugins(cfg, AtomicCheckpointIO(run_dir / "checkpoints")))
    if cfg.get("estimate_cost", True) and trainer.is_global_zero:
        announce_cost(cfg, trainer, method, datamodule)
    try:
        record = _fit_and_test(cfg, trainer, method, datamodule, run_dir, ckpt_path)
    finally:
        finish_wandb(loggers)
    if trainer.is_global_zero and "rob_avg" in record:
        print_summary(record, run_dir, loggers)
    return record


def compile_model(model: Any, backend: Any = "inductor") -> Any:
    """``compile=true``: ``Module.compile`` in place (parameter names, and so checkpoints, stay those
    of the eager model), with dynamic shapes: the early-stopping attacks' compaction changes the batch
    size at every step, and static graphs keyed on each size reached torch's recompile limit (8)
    within two BAT steps. What remains are the few variants of mode, grad and autocast
    (tests/run/test_compile.py counts them)."""
    model.compile(backend=backend, dynamic=True)
    return model


def announce_cost(cfg: DictConfig, trainer: Any, method: Any, datamodule: Any) -> None:
    """One line before training: the estimated time per epoch and for the run (batlit/tools/cost.py).
    An estimate that cannot be made (a compiled model, an unusual method) is skipped, never fatal."""
    from .tools.cost import cost_line, estimate

    device = trainer.strategy.root_device
    if device.type == "cuda" and trainer.world_size > 1:
        return  # CUDA must stay uninitialised before a fork-based DDP launch; the probe would start it
    try:
        est = estimate(method, datamodule, device, str(trainer.precision), epochs=int(cfg.epochs),
                       val_every=int(trainer.check_val_every_n_epoch or 1), world_size=trainer.world_size,
                       test=bool(cfg.get("test", True)), trainer=trainer)
    except Exception as err:  # noqa: BLE001 - an estimate is a courtesy; the run goes on
        log.debug("no run-time estimate: %s", err)
        return
    what = f"{picked_name(cfg)}, {choices().get('model') or cfg.model._target_} on {device.type}, {trainer.precision}"
    print(cost_line(est, int(cfg.epochs), device, what), flush=True)


def build_method(cfg: DictConfig, model: Any, node: DictConfig | None = None, **kwargs: Any) -> Any:
    """The LightningModule of ``cfg.method`` (or ``node``) around ``model``; a bad option is one
    ConfigError line."""
    return _instantiate(cfg.method if node is None else node, "method", _recursive_=False, _convert_="all", model=model,
                        attack=OmegaConf.to_container(cfg.attack, resolve=True),
                        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
                        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True), **kwargs)


def check_method_options(cfg: DictConfig) -> None:
    """Build the method once around a stand-in model, before any data is read: every option check
    in the method's constructor (unknown keys, values out of range) then runs in a second. FRL's
    ``init_ckpt`` is left out here (validate() checked that the file exists); it is read after the
    real method is built (:func:`batlit.checkpoint.hot_start.load_hot_start`)."""
    from torch import nn

    stand_in = nn.Linear(1, 2)
    stand_in.num_classes = int(cfg.data.get("num_classes") or 2)
    options = OmegaConf.to_container(cfg.method, resolve=True)  # detached: init_ckpt may be ??? here
    given = options.get("init_ckpt")
    if "init_ckpt" in options:
        options["init_ckpt"] = None
    method = build_method(cfg, stand_in, node=OmegaConf.create(options))
    if getattr(method, "fine_tunes", False) and not given:
        raise ConfigError(f"method.init_ckpt is required: {type(method).__name__} fine-tunes a robust model "
                          "(e.g. method.init_ckpt=<a PGD-AT run>/checkpoints/last.ckpt)")


def resume_path(cfg: DictConfig, run_dir: Path) -> Path | None:
    """``ckpt_path`` if given, else with ``resume=true`` the run directory's last.ckpt when it exists."""
    if cfg.get("ckpt_path"):
        return Path(str(cfg.ckpt_path))
    last = run_dir / "checkpoints" / "last.ckpt"
    if cfg.get("resume") and last.is_file():
        log.info("resuming from %s", last)
        return last
    if cfg.get("resume"):
        log.info("resume=true but no %s yet: starting from scratch", last)
    return None


def trainer_plugins(cfg: DictConfig, checkpoint_io: Any) -> list[Any]:
    """Atomic checkpoint I/O always; inside a SLURM job, SLURM's environment with auto-requeue from config."""
    import signal

    from lightning.pytorch.plugins.environments import SLURMEnvironment

    plugins = [checkpoint_io]
    if SLURMEnvironment.detect():
        spec = cfg.get("slurm") or {}
        plugins.append(SLURMEnvironment(auto_requeue=bool(spec.get("auto_requeue", True)),
                                        requeue_signal=getattr(signal, str(spec.get("requeue_signal", "SIGUSR1")))))
    return plugins


def _fit_and_test(cfg: DictConfig, trainer, method, datamodule, run_dir: Path, ckpt_path: Path | None) -> dict[str, Any]:
    import torch

    trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt_path)
    val = results_to_json(method.val_results, method.class_names) if method.val_results else None
    if not cfg.get("test", True):
        return {"val": val} if val else {}
    trainer.test(method, datamodule=datamodule, verbose=False)
    summary = results_to_json(method.test_results, method.class_names)
    picked = choices()
    record = {
        "method": picked.get("method"), "data": picked.get("data"), "model": picked.get("model"),
        "experiment": picked.get("experiment"), "seed": cfg.seed, "epochs": cfg.epochs,
        "num_classes": method.num_classes, "class_names": method.class_names,
        "num_test_samples": int(sum(summary["count_per_class"])),
        "attack": {"name": "pgd", "eps": cfg.attack.eps, **OmegaConf.to_container(cfg.attack.test)},
        "batlit_version": _version(), "torch_version": torch.__version__,
        "fast_paths": fast_paths(cfg, trainer, datamodule),
        **summary,
        # the class-wise methods' final per-class state (weights, eps scales, multipliers): batlit.report
        "class_state": method.class_state() if hasattr(method, "class_state") else None,
        "val": val,  # the last validation (same attack as attack.val): for choosing hyper-parameters
        "wall_seconds": wall_seconds(trainer),
    }
    if trainer.is_global_zero:
        atomic_write_text(run_dir / "metrics.json", json.dumps(record, indent=2))
    return record


def wall_seconds(trainer: Any) -> dict[str, float] | None:
    """Wall time of ``fit`` (training and validation, summed over every resumed session up to its
    last checkpoint) and of ``test``, from Lightning's Timer; batlit.report's cost table."""
    from lightning.pytorch.callbacks import Timer

    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is None:
        return None
    return {"fit": round(timer.time_elapsed("train"), 2), "test": round(timer.time_elapsed("test"), 2)}


def fast_paths(cfg: DictConfig, trainer: Any, datamodule: Any = None) -> dict[str, Any]:
    """The switches the run trained with, for metrics.json. The device is the strategy's: after
    ``trainer.test()`` Lightning has moved the module back to the CPU, so ``method.device`` would
    say cpu for every GPU run. ``on_device`` is false too when a split was too large for the GPU and
    stayed in host memory (the data module then turned its ``on_device`` off, with a warning)."""
    return {"precision": str(trainer.precision), "channels_last": bool(cfg.model.get("channels_last", False)),
            "fold_batchnorm": bool(cfg.model.get("fold_batchnorm", False)),
            "on_device": bool(cfg.data.get("on_device", False)) and trainer.strategy.root_device.type != "cpu"
            and bool(getattr(datamodule, "on_device", True)),
            "compile": bool(cfg.get("compile", False))}


def print_summary(record: dict[str, Any], run_dir: Path, loggers: list[Any]) -> None:
    """The per-class test table and where every output went."""
    attack = record["attack"]
    print(f"\nTest: clean and PGD-{attack['steps']} (eps={attack['eps']:.4g}) errors in %, "
          f"{record['num_test_samples']} images  [{record['method']} / {record['data']} / {record['model']}]")
    print(format_table(record, record["class_names"], intervals=True))
    print(f"\nOutputs written to {run_dir}")
    print(f"  metrics:    {run_dir / 'metrics.json'}")
    print(f"  checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}")
    print(f"  config:     {run_dir / 'config.yaml'}")
    for logger in loggers:
        kind = type(logger).__name__.removesuffix("Logger").lower()
        where = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if kind == "wandb":
            where = f"{Path(logger.save_dir) / 'wandb'}  (offline runs: wandb sync {Path(logger.save_dir) / 'wandb'}/offline-run-*)"
        print(f"  {kind + ':':<11} {where}")


def wandb_runs_possible(loggers: list[Any]) -> bool:
    from lightning.pytorch.loggers import WandbLogger

    return any(isinstance(lg, WandbLogger) for lg in loggers)


def objective(record: dict[str, Any], spec: DictConfig) -> float | None:
    """The number a sweeper minimises (conf/train.yaml ``objective``); None when the run has no such split."""
    source = record.get("val") if spec.split == "val" else record
    if not source or spec.metric not in source:
        return None
    robust_accuracy = 1 - source["rob_avg"]
    if robust_accuracy < spec.min_robust_accuracy:
        return 1.0 + (spec.min_robust_accuracy - robust_accuracy)
    return float(source[spec.metric])


def check_objective(cfg: DictConfig) -> None:
    """An Optuna sweep needs its objective: fail on the first job's config, not after training."""
    spec = cfg.get("objective")
    if spec is None:
        return
    if spec.split not in ("val", "test"):
        raise ConfigError(f"objective.split must be val or test, got {spec.split!r}")
    if spec.metric not in ("std_avg", "std_worst", "bndy_avg", "bndy_worst", "rob_avg", "rob_worst"):
        raise ConfigError(f"objective.metric must be one of std/bndy/rob _avg/_worst, got {spec.metric!r}")
    if not 0 <= spec.min_robust_accuracy <= 1:
        raise ConfigError(f"objective.min_robust_accuracy must be in [0, 1], got {spec.min_robust_accuracy!r}")
    sweeper = str(OmegaConf.select(HydraConfig.get(), "sweeper._target_", default="") or "")
    if "optuna" in sweeper.lower():
        if spec.split == "val" and not cfg.data.get("val_size"):
            raise ConfigError("objective.split=val needs a validation split: set data.val_size > 0")
        every = OmegaConf.select(cfg, "trainer.check_val_every_n_epoch", default=1) or 1
        if spec.split == "val" and cfg.epochs < every:
            raise ConfigError(f"objective.split=val: epochs={cfg.epochs} ends before the first validation "
                              f"(trainer.check_val_every_n_epoch={every}); train longer or validate more often")
        if spec.split == "test" and not cfg.get("test", True):
            raise ConfigError("objective.split=test needs test=true")


def _version() -> str:
    from . import __version__

    return __version__


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    _quiet_lightning()
    record = exit_on_user_error(run, cfg)
    return objective(record, cfg.objective) if cfg.get("objective") else None  # what a sweeper minimises


if __name__ == "__main__":
    main()
