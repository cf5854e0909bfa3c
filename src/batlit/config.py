"""Config helpers: the project-root resolver and the checks that run before any training.

Every check names the offending key and value in one line (raised as :class:`ConfigError`);
the entry points print that line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

from omegaconf import DictConfig, OmegaConf


ATTACK_LOSSES = ("ce", "kl", "cw")  # batlit.attacks.pgd's losses, here so that validate() needs no torch
PRECISIONS = ("auto", "fp32", "fp32_first", "bf16", "inherit")  # batlit.attacks' precision values (attacks/_common.py)
OPTIMIZERS = ("sgd", "adam")
SCHEDULERS = ("constant", "multistep", "cosine", "onecycle")


class UserError(Exception):
    """A mistake or missing resource the user can fix; entry points print it as one line."""

    kind = "error"
    exit_code = 1


class ConfigError(UserError, ValueError):
    """A user mistake in the composed config."""

    kind = "config error"
    exit_code = 2


class DataUnavailableError(UserError, RuntimeError):
    """The dataset's files are missing and could not be obtained (e.g. no internet).

    The message is one line that names the data path and says how to get the files.
    """

    kind = "data error"
    exit_code = 1


def exit_on_user_error(run: Callable[..., T], *args: Any) -> T:
    """Run an entry point; a :class:`UserError` becomes one line on stderr and its exit status."""
    try:
        return run(*args)
    except UserError as err:
        print(f"batlit: {err.kind}: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def require_on_command_line(key: str, example: str) -> None:
    """One line when a mandatory key is not given. Hydra reports a missing ``???`` value that the
    output folder interpolates (``ckpt``) as a long traceback, before any batlit code runs."""
    args = sys.argv[1:]
    own_config = ("-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--config-name", "-cn",
                  "--config-dir", "-cd", "--shell-completion", "-sc")
    if any(a.split("=", 1)[0] in own_config for a in args):
        return  # help, printing the config, or a config of the user's own that may set the key
    if not any(a.split("=", 1)[0].lstrip("+~") == key for a in args):
        print(f"batlit: config error: {key} is required, e.g. {example}", file=sys.stderr)
        sys.exit(2)


def resolve_device(name: str):
    """``auto``: the GPU when there is one, else the CPU; anything else as torch spells it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device: {name!r} is not a device ({err})") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r}, but no CUDA GPU is available here (device=auto uses one when there is)")
    return device


def project_root() -> str:
    """BATLIT_ROOT if set; the source checkout for an editable install; else the working directory."""
    if os.environ.get("BATLIT_ROOT"):
        return os.environ["BATLIT_ROOT"]
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "batlit").is_dir():
        return str(checkout)
    return os.getcwd()


def run_dir_of(ckpt: str) -> str:
    """The training run directory a checkpoint belongs to (``<run>/checkpoints/last.ckpt``)."""
    path = Path(str(ckpt)).expanduser().resolve()
    return str(path.parent.parent if path.parent.name == "checkpoints" else path.parent)


def sweep_group() -> str | None:
    """In a multirun, a name its jobs share (W&B group): the task and the sweep folder; else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return f"{hydra_cfg.job.name}-{Path(hydra_cfg.sweep.dir).name}"


def run_name() -> str:
    """method/data/model, plus a multirun job's overrides: what a dashboard row needs to say."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    picked = hydra_cfg.runtime.choices
    name = "/".join(str(picked.get(g)) for g in ("method", "data", "model") if picked.get(g))
    overrides = hydra_cfg.job.override_dirname
    return f"{name} {overrides}" if sweep_group() and overrides else name


def on_gpu(accelerator: str = "auto") -> bool:
    """True where the run will use a CUDA GPU: one is visible and ``trainer.accelerator`` is not cpu.

    The default of every GPU fast path (``model.channels_last``, ``data.on_device``, bf16).
    """
    if str(accelerator) == "cpu":
        return False
    import torch

    return bool(torch.cuda.is_available())


def gpu_or(on_gpu_value: Any, otherwise: Any, accelerator: str = "auto") -> Any:
    """``${batlit_gpu_or:a,b,${.accelerator}}``: the first value on a GPU, else the second."""
    return on_gpu_value if on_gpu(accelerator) else otherwise


def cpu_has_bf16() -> bool:
    """The CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles), as torch detects it.

    On such a CPU (the project's 2-core Xeons list ``amx_bf16``) bf16 autocast and channels_last
    make convolutions several times faster; elsewhere bf16 is emulated and slower than fp32.
    ``BATLIT_CPU_BF16=0`` (or ``1``) overrides the detection.
    """
    forced = os.environ.get("BATLIT_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def fast_bf16(accelerator: str = "auto") -> bool:
    """``${batlit_fast_bf16:${.accelerator}}``: the run's device computes bf16 fast — a GPU, or a
    CPU with bf16 in hardware. The default of ``trainer.precision`` (bf16-mixed) and of
    ``model.channels_last``."""
    return on_gpu(accelerator) or cpu_has_bf16()


def fast_precision(accelerator: str = "auto") -> str:
    """``${batlit_precision:${.accelerator}}``, the default ``trainer.precision``: ``bf16-mixed``
    where bf16 is fast (a GPU with bf16, Ampere and later; a CPU with bf16 in hardware);
    ``16-mixed`` (fp16 autocast with a gradient scaler) on a GPU with fp16 tensor cores but no bf16
    (V100, T4), where bf16 runs emulated and slowly; else ``32-true``."""
    if on_gpu(accelerator):
        import torch

        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16-mixed"
        return "16-mixed" if torch.cuda.get_device_capability() >= (7, 0) else "32-true"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def kept_classes(total: Any, classes: Any = None, exclude: Any = None) -> Any:
    """``${batlit_kept:10,${.classes},${.exclude_classes}}``: the class count after data.classes /
    data.exclude_classes (which the model's num_classes follows); null stays null (discovered)."""
    if total is None:
        return None
    if classes is not None:
        return len(set(classes))
    return int(total) - len(set(exclude)) if exclude is not None else int(total)


def register_resolvers() -> None:
    for name, fn in (("batlit_root", project_root), ("batlit_run_dir", run_dir_of),
                     ("batlit_sweep_group", sweep_group), ("batlit_run_name", run_name),
                     ("batlit_on_gpu", lambda acc="auto": on_gpu(acc)),
                     ("batlit_gpu_or", lambda a, b, acc="auto": gpu_or(a, b, acc)),
                     ("batlit_fast_bf16", lambda acc="auto": fast_bf16(acc)),
                     ("batlit_precision", lambda acc="auto": fast_precision(acc)),
                     ("batlit_kept", kept_classes)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _check(cfg: DictConfig, key: str, ok: Callable[[Any], bool], rule: str) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    try:
        good = ok(value)
    except TypeError:
        good = False
    if not good:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_data_root(cfg: DictConfig) -> None:
    """A dataset that cannot be downloaded must already be at data.root (image_folder never downloads)."""
    data = cfg.get("data") or {}
    root = _get(cfg, "data.root")
    no_download = "download" in data and data.get("download") is False
    from_folder = str(data.get("_target_", "")).endswith("ImageFolderDataModule")
    if root and (no_download or from_folder) and not Path(str(root)).exists():
        raise ConfigError(f"data.root: no dataset at '{root}'" + (" and data.download=false" if no_download else ""))


def validate(cfg: DictConfig, check_paths: bool = True) -> None:
    """Range checks on the keys a user types most; cheap, and run before data or model load.

    ``check_paths=False`` (a config stored in a checkpoint) leaves out whether ``data.root``,
    ``ckpt_path`` and ``method.init_ckpt`` exist and whether ``slurm.requeue_signal`` is a signal
    here: they are about the machine that wrote it."""
    _check(cfg, "epochs", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    _check(cfg, "seed", _is_int, "an integer")
    _check(cfg, "attack.eps", lambda v: v >= 0, ">= 0")
    _check(cfg, "attack.train.eps", lambda v: v >= 0, ">= 0, or null for attack.eps")
    for phase in ("train", "val", "test"):
        _check(cfg, f"attack.{phase}.step_size", lambda v: v > 0, "> 0")
        _check(cfg, f"attack.{phase}.steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    for phase in ("train", "val", "test"):
        _check(cfg, f"attack.{phase}.precision", lambda v: v in PRECISIONS, "one of " + ", ".join(PRECISIONS))
    for phase in ("val", "test"):
        _check(cfg, f"attack.{phase}.loss", lambda v: v in ATTACK_LOSSES, "one of " + ", ".join(ATTACK_LOSSES))
        _check(cfg, f"attack.{phase}.init", lambda v: v in ("uniform", "normal", "none"),
               "one of uniform, normal, none")
    _check(cfg, "data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    _check(cfg, "data.eval_batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    _check(cfg, "data.num_workers", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    _check(cfg, "data.num_classes", lambda v: _is_int(v) and v >= 2, "an integer >= 2")
    _check(cfg, "data.crop_padding", lambda v: _is_int(v) and v >= 0, "an integer >= 0 or null")
    for key in ("data.train_subset", "data.test_subset", "data.image_size", "data.in_channels", "data.n_train",
                "data.n_test", "data.generated_classes"):
        _check(cfg, key, lambda v: _is_int(v) and v >= 1, "an integer >= 1 or null")
    _check(cfg, "data.val_size", lambda v: not isinstance(v, bool) and v >= 0, ">= 0 (a count or a fraction)")
    for key in ("data.noise",):
        _check(cfg, key, lambda v: not isinstance(v, bool) and v >= 0, ">= 0")
    _check(cfg, "optimizer.lr", lambda v: v > 0, "> 0")
    _check(cfg, "optimizer.weight_decay", lambda v: v >= 0, ">= 0")
    _check(cfg, "optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)")
    _check(cfg, "optimizer.name", lambda v: v in OPTIMIZERS, "one of " + ", ".join(OPTIMIZERS))
    _check(cfg, "scheduler.name", lambda v: v in SCHEDULERS, "one of " + ", ".join(SCHEDULERS))
    if _get(cfg, "scheduler.name") == "multistep":
        milestones = _get(cfg, "scheduler.milestones")
        if not (OmegaConf.is_list(milestones) and all(_is_int(m) and m >= 1 for m in milestones)):
            raise ConfigError(f"scheduler.milestones must be a list of epochs >= 1, got {milestones!r}")
        _check(cfg, "scheduler.count_from", lambda v: _is_int(v) and v in (0, 1),
               "1 (the lr drops at the start of 1-based epoch m) or 0 (after epoch m)")
        factors = _get(cfg, "scheduler.factors")
        if factors is not None and not (OmegaConf.is_list(factors) and len(factors) == len(milestones)):
            raise ConfigError(f"scheduler.factors must have one value per milestone ({len(milestones)}), "
                              f"got {factors!r}")
    # Lightning's default inference mode cannot be left for the evaluation attacks' input gradients
    _check(cfg, "trainer.inference_mode", lambda v: v is False, "false (evaluation attacks need input gradients)")
    for key in ("method.beta", "method.alpha", "method.bound", "method.rate1", "method.rate2",
                "method.eta", "method.r", "method.lambda1", "method.lambda2"):
        _check(cfg, key, lambda v: not isinstance(v, bool) and v >= 0, ">= 0")
    if _get(cfg, "method._target_") == "batlit.methods.DAFA":  # GAIRAT's lam may be negative
        _check(cfg, "method.lam", lambda v: not isinstance(v, bool) and v >= 0, ">= 0")
    _check(cfg, "method.threshold", lambda v: v is None or 0 <= v <= 1, "in [0, 1] (or null for the base's default)")
    warmup, epochs = _get(cfg, "method.warmup_epoch"), _get(cfg, "epochs")
    if _is_int(warmup) and _is_int(epochs) and warmup > epochs:
        raise ConfigError(f"method.warmup_epoch={warmup} is beyond the run's epochs={epochs}: the class weights "
                          "would never be computed (set method.warmup_epoch <= epochs)")
    _check(cfg, "method.tau", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    if "init_ckpt" in (cfg.get("method") or {}).keys() and OmegaConf.is_missing(cfg.method, "init_ckpt"):
        raise ConfigError("method.init_ckpt is required: the checkpoint to fine-tune (e.g. last.ckpt of a PGD-AT run)")
    _check(cfg, "resume", lambda v: isinstance(v, bool), "true or false")
    for key in ("compile", "model.channels_last", "data.on_device"):
        _check(cfg, key, lambda v: isinstance(v, bool), "true or false")
    if check_paths:  # both are about this machine: its files, its operating system's signals
        _check_paths(cfg)
        requeue = _get(cfg, "slurm.requeue_signal")
        if requeue is not None:
            import signal

            if not isinstance(getattr(signal, str(requeue), None), signal.Signals):
                raise ConfigError(f"slurm.requeue_signal must name a signal such as SIGUSR1, got {requeue!r}")
    data_k, model_k = _get(cfg, "data.num_classes"), _get(cfg, "model.num_classes")
    if data_k is not None and model_k is not None and data_k != model_k:
        raise ConfigError(f"model.num_classes={model_k} does not match data.num_classes={data_k}")


def _check_paths(cfg: DictConfig) -> None:
    """The files a run reads exist: data.root (where nothing downloads), ckpt_path, method.init_ckpt."""
    _check_data_root(cfg)
    ckpt_path = _get(cfg, "ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path: no checkpoint file at '{ckpt_path}'")
    init_ckpt = _get(cfg, "method.init_ckpt")
    if init_ckpt and not Path(str(init_ckpt)).is_file():
        raise ConfigError(f"method.init_ckpt: no checkpoint file at '{init_ckpt}'")


def refuse_linked_outputs(folder: str | Path, job_name: str | None = None, output_subdir: str | None = None,
                          extra: tuple[str, ...] = ()) -> None:
    """Refuse, as one :class:`ConfigError`, an output folder that is a link or not a folder, or a
    link (or anything but a regular file) where Hydra writes its own files into it: the job log
    ``<job_name>.log``, ``<output_subdir>/{config,hydra,overrides}.yaml`` and ``extra`` names.
    Hydra opens these without care for links, so this runs before Hydra writes (:class:`RefuseLinkedOutputs`)."""
    import stat

    folder = Path(folder)
    if folder.is_symlink():
        raise ConfigError(f"{folder}: output folder is a symbolic link; refusing to write through it")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: output folder exists and is not a folder")
    names = [*extra, *([f"{job_name}.log"] if job_name else [])]
    if output_subdir:
        sub = folder / output_subdir
        if sub.is_symlink() or (sub.exists() and not sub.is_dir()):
            raise ConfigError(f"{sub}: Hydra's output folder is a link or not a folder; refusing to write through it")
        names += [f"{output_subdir}/{n}" for n in ("config.yaml", "hydra.yaml", "overrides.yaml")]
    for name in names:
        try:
            mode = os.lstat(folder / name).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{folder / name}: is a link or not a regular file; refusing to write through it")


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra is a dependency
    _HydraCallback = object


class RefuseLinkedOutputs(_HydraCallback):
    """Hydra callback (``hydra.callbacks``): before Hydra creates the run folder or writes ``.hydra/``
    and the job log, refuse an output folder that is a link, or links where those files go
    (:func:`refuse_linked_outputs`); one line on stderr, exit status 2. A run folder is something
    people download and share (docs/reliability.md, Trust)."""

    def _check(self, config: DictConfig, folder_key: str, extra: tuple[str, ...] = ()) -> None:
        try:
            folder = OmegaConf.select(config, folder_key)
            job = OmegaConf.select(config, "hydra.job.name", default=None)
            subdir = OmegaConf.select(config, "hydra.output_subdir", default=None)
        except Exception:  # noqa: BLE001 - a config Hydra cannot resolve: Hydra reports it itself
            return
        if folder is None:
            return
        exit_on_user_error(refuse_linked_outputs, folder, job, subdir, extra)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir", ("multirun.yaml",))
