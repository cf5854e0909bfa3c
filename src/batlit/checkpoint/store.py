"""Re-create a trained model (and its data) from a batlit checkpoint alone.

Every checkpoint carries the composed run config (``hyper_parameters.run_config``) and a ``batlit``
record (version, format, class names), so ``evaluate`` / ``analyze`` need only ``ckpt=PATH``.

A checkpoint may come from anywhere, so reading one runs none of its contents: ``torch.load`` with
``weights_only=True`` gives tensors and plain data only, and the stored run config is checked to
hold plain values and name only batlit's own models and data (:func:`stored_run_config`) before
anything is built. The model and data module are then built through :mod:`batlit.registry`, never
``hydra.utils.instantiate``. Every loading path (evaluate, analyze, bench, FRL's ``init_ckpt``,
resume) goes through :func:`read_batlit_checkpoint`. docs/reliability.md, "Trust".
"""

from __future__ import annotations

import logging
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from .. import __version__
from ..config import ConfigError, project_root, validate
from ..data.base import SubsetTooLargeError
from ..data.image_folder import check_zip_directory
from ..registry import DATAMODULES, MODELS, shipped_targets
from ..safe_io import atomic_text_writer, read_regular_text

log = logging.getLogger("batlit")


@dataclass
class LoadedRun:
    model: torch.nn.Module
    config: DictConfig
    class_names: list[str]
    run_dir: Path


#: The layout of the ``batlit`` record and run config in a checkpoint; a newer layout is refused.
CHECKPOINT_FORMAT = 1
# Hydra's instantiation keys: in a stored config each would name code or change how it is called.
_INSTANTIATE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def check_archive(path: Path, key: str = "ckpt") -> None:
    """The zip archive ``torch.save`` writes, checked from its central directory before ``torch.load``
    inflates anything: ``torch.save`` stores every member uncompressed, so a compressed member (a
    small file that would inflate to gigabytes), a member whose declared size differs from its stored
    size or that lies past the end of the file, or declared sizes summing to more than the file
    holds, are refused in one line. The structural checks are the dataset zips'
    (:func:`batlit.data.image_folder.check_zip_directory`)."""
    import zipfile

    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except Exception as err:  # zipfile raises many types on crafted input
        raise ConfigError(f"{key}: '{path}' is not a readable checkpoint (not the zip archive torch.save writes: "
                          f"{type(err).__name__})") from None
    try:
        check_zip_directory(str(path), infos, size, max_member_bytes=None)
    except ValueError as err:
        raise ConfigError(f"{key}: '{path}' {err}") from None
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise ConfigError(f"{key}: '{path}' holds a compressed member '{info.filename[:80]}' ({info.compress_size} "
                              f"bytes declaring {info.file_size}); torch.save stores members uncompressed, refused "
                              "before inflating it")
    if sum(i.file_size for i in infos) > size:
        raise ConfigError(f"{key}: '{path}' declares {sum(i.file_size for i in infos)} bytes in its members, more "
                          f"than the file's {size}")


def read_checkpoint(path: str | Path, key: str = "ckpt") -> dict[str, Any]:
    """``torch.load(weights_only=True)``: tensors and plain data, never pickled code; the archive is
    checked first (:func:`check_archive`), so nothing inflates beyond the file's own size."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: no checkpoint file at '{path}'")
    check_archive(path, key)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, in one line
        raise ConfigError(f"{key}: '{path}' is not a readable checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200] if str(err) else ''})") from err


def _refuse(key: str, path: Path, where: str, what: str) -> ConfigError:
    return ConfigError(f"{key}: '{path}' stores {where}={what}, refused: a checkpoint's config may hold only "
                       "plain values and name only batlit's own models and data (docs/reliability.md, Trust)")


#: At most this many values in a stored run config (a real one holds a few hundred). The walk stops
#: there: a few KB of pickle whose lists share references can stand for 2^64 paths.
MAX_CONFIG_NODES = 100_000


def _check_plain(node: Any, where: str, allowed: dict[str, frozenset[str]], key: str, path: Path,
                 budget: list[int] | None = None) -> None:
    """Refuse anything in a stored config that could name code: an unknown ``_target_``, any other
    Hydra instantiation key, an interpolation (it would call a resolver) or a non-plain value; and a
    missing value (``???``). The walk counts what it visits and stops at :data:`MAX_CONFIG_NODES`."""
    budget = [MAX_CONFIG_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"{key}: '{path}' stores a run config of more than {MAX_CONFIG_NODES} values (at {where[:80]}), "
                          "refused: a real one holds a few hundred (shared references?)")
    if isinstance(node, dict):
        for name, value in node.items():
            sub = f"{where}.{name}" if where else str(name)
            if not isinstance(name, str):
                raise _refuse(key, path, where or "<root>", f"a non-string key {name!r}")
            if name in _INSTANTIATE_KEYS or (name.startswith("_") and name.endswith("_")):
                if not (name == "_target_" and isinstance(value, str) and value in allowed.get(sub, ())):
                    raise _refuse(key, path, sub, repr(value)[:80])
                continue
            _check_plain(value, sub, allowed, key, path, budget)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _check_plain(value, f"{where}[{i}]", allowed, key, path, budget)
    elif isinstance(node, str):
        if "${" in node:
            raise _refuse(key, path, where, f"{node[:80]!r} (an interpolation)")
        if node == "???":
            raise ConfigError(f"{key}: '{path}' stores {where}='???', a value that was never set; refused")
    elif not (node is None or isinstance(node, (bool, int, float))):
        raise _refuse(key, path, where, f"a {type(node).__name__}")


# characters that reorder what a terminal shows (a class name could hide text behind them)
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: A stored ``data.image_size`` above this is refused (ImageNet-style runs use 224 to 512).
MAX_STORED_IMAGE_SIZE = 1024
#: What the stored data sizes may make batlit generate before evaluating (``BATLIT_MAX_DECODED_BYTES`` overrides).
MAX_STORED_DATA_BYTES = 4 * 2**30


def _check_sizes(config: DictConfig, key: str, path: Path) -> None:
    """Stored data sizes cannot make batlit allocate many GiB to evaluate a few images: the image
    size is bounded, and so is what the synthetic data generates (every sample of both splits and
    the class prototypes, as float32, before the test subset is taken)."""
    data = config.data

    def size(name: str, default: int) -> int:
        value = data.get(name, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}: '{path}' stores data.{name}={value!r}, not an integer >= 1")
        return value

    image_size = size("image_size", 32)
    if image_size > MAX_STORED_IMAGE_SIZE:
        raise ConfigError(f"{key}: '{path}' stores data.image_size={image_size}, more than the {MAX_STORED_IMAGE_SIZE} "
                          "batlit evaluates; refused")
    if str(data._target_).endswith("SyntheticDataModule"):
        n = size("n_train", 512) + size("n_test", 256) + size("generated_classes", size("num_classes", 10))
        need = n * size("in_channels", 3) * image_size ** 2 * 4
        cap = int(os.environ.get("BATLIT_MAX_DECODED_BYTES") or MAX_STORED_DATA_BYTES)
        if need > cap:
            raise ConfigError(f"{key}: '{path}' stores data.n_train={data.get('n_train')}, data.n_test={data.get('n_test')}, "
                              f"data.image_size={image_size}: {need / 2**30:.1f} GiB to generate, over the "
                              f"{cap / 2**30:.1f} GiB allowed (BATLIT_MAX_DECODED_BYTES); refused")


def _check_record(ckpt: dict[str, Any], key: str, path: Path) -> None:
    """A batlit checkpoint of a layout and version this batlit reads."""
    from packaging.version import InvalidVersion, Version

    record = ckpt.get("batlit")
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(record, dict) or not isinstance(hparams, dict) or not isinstance(hparams.get("run_config"), dict):
        raise ConfigError(f"{key}: '{path}' was not written by batlit.train (no batlit record and run config "
                          "inside); batlit reads only its own checkpoints")
    if not isinstance(record.get("format", 1), int) or record.get("format", 1) > CHECKPOINT_FORMAT:
        raise ConfigError(f"{key}: '{path}' has checkpoint format {record.get('format')!r}, newer than this "
                          f"batlit's {CHECKPOINT_FORMAT}: upgrade batlit to read it")
    try:
        written, ours = Version(str(record.get("version"))), Version(__version__)
    except InvalidVersion:
        raise ConfigError(f"{key}: '{path}' names batlit version {str(record.get('version'))[:40]!r}, "
                          "which is not a version") from None
    if written.release > ours.release and ours.release != (0, 0, 0):  # 0.0.0: a source tree, not installed
        raise ConfigError(f"{key}: '{path}' was written by batlit {written}, newer than this batlit {ours}: "
                          "upgrade batlit to read it")
    state = ckpt.get("state_dict")
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ConfigError(f"{key}: '{path}' holds no state_dict of tensors")
    names = record.get("class_names")
    if not (isinstance(names, list) and 2 <= len(names) <= MAX_CONFIG_NODES and all(isinstance(n, str) for n in names)):
        raise ConfigError(f"{key}: '{path}' stores batlit.class_names={str(names)[:80]}, not a list of class names")
    for i, name in enumerate(names):  # printed to terminals, written to CSV files and figures
        if len(name) > 200 or any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI_CONTROLS for ch in name):
            raise ConfigError(f"{key}: '{path}' stores batlit.class_names[{i}]={name[:80]!r}, refused: a class name "
                              "is at most 200 printable characters (no control or escape characters)")


def stored_run_config(ckpt: dict[str, Any], path: str | Path, key: str = "ckpt") -> DictConfig:
    """The run config inside a checkpoint, checked to name no code before anything uses it.

    Plain numbers, strings, booleans, lists and mappings only; the only ``_target_`` values allowed
    are the ones batlit's own config groups put at that key (:func:`batlit.registry.shipped_targets`).
    The values then pass the same checks as the command line (``config.validate``), except that
    the writer's file paths are not required to exist here. Anything else is one ConfigError line
    naming the checkpoint and the key.
    """
    path = Path(path)
    _check_record(ckpt, key, path)
    stored = ckpt["hyper_parameters"]["run_config"]
    _check_plain(stored, "", shipped_targets(), key, path)  # deeper than Python's stack: torch.load refused it
    for group in ("model", "data", "attack"):
        if not isinstance(stored.get(group), dict):
            raise ConfigError(f"{key}: '{path}' stores {group}={str(stored.get(group))[:40]!r}, not the {group} "
                              "settings of a batlit run")
    for name, group in (("_target_", "model"), ("_target_", "data"), ("eps", "attack")):
        if name not in stored[group]:
            raise ConfigError(f"{key}: '{path}' stores no {group}.{name}")
    config = OmegaConf.create(stored)
    try:
        validate(config, check_paths=False)
    except ConfigError as err:
        raise ConfigError(f"{key}: '{path}' stores a config that fails batlit's checks: {err}") from err
    _check_sizes(config, key, path)
    if len(ckpt["batlit"]["class_names"]) != OmegaConf.select(config, "model.num_classes", default=None):
        raise ConfigError(f"{key}: '{path}' stores {len(ckpt['batlit']['class_names'])} class names for "
                          f"model.num_classes={OmegaConf.select(config, 'model.num_classes', default=None)}")
    return config


def storable_run_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run config as checkpoints store it: the extra callbacks a user's own config or command
    line adds (``callbacks.<name>._target_``, the user's code) are kept as plain records
    (``target``, ``partial``, ``args``), so that the checkpoint names no code to whoever loads it,
    and the user's own checkpoints still load (:func:`stored_run_config`)."""
    def plain(node: Any) -> Any:
        if isinstance(node, dict):
            return {(k[1:-1] if k in _INSTANTIATE_KEYS else k): plain(v) for k, v in node.items()}
        if isinstance(node, list):
            return [plain(v) for v in node]
        return node

    return {**config, "callbacks": plain(config["callbacks"])} if config.get("callbacks") else config


def read_batlit_checkpoint(path: str | Path, key: str = "ckpt") -> tuple[dict[str, Any], DictConfig]:
    """The checkpoint (tensors and plain data) and its checked run config (:func:`stored_run_config`)."""
    ckpt = read_checkpoint(path, key)
    return ckpt, stored_run_config(ckpt, path, key)


def _plain_kwargs(node: DictConfig) -> dict[str, Any]:
    return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "_target_"}


def build_model(config: DictConfig, key: str = "ckpt", path: str | Path = "") -> torch.nn.Module:
    """conf/model's factory named by ``config.model._target_`` (batlit.registry.MODELS), plain arguments.

    ``channels_last`` is this machine's default (where bf16 is fast: a GPU or a bf16 CPU), not the
    value the writing run resolved: a GPU-trained checkpoint evaluated on a plain CPU is NCHW there.
    The layout changes no parameter name and no output beyond float rounding."""
    target = str(config.model._target_)
    if target not in MODELS:  # stored_run_config allows only shipped targets; this keeps the two in step
        raise ConfigError(f"{key}: '{path}' names model {target}, which is not one of batlit's models")
    kwargs = _plain_kwargs(config.model)
    if "channels_last" in kwargs:  # the layout is the reading machine's default, not the writer's
        from ..config import fast_bf16

        kwargs["channels_last"] = fast_bf16()
    try:
        return MODELS[target](**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}: '{path}' stores model settings {target} cannot take: {err}") from err


REPORTED_WEIGHTS = ("model", "averaged_model")  # state-dict prefixes a checkpoint may name as its reported model


def load_run(path: str | Path, key: str = "ckpt") -> LoadedRun:
    """The trained model in eval mode, the config it was trained with and its class names.

    The model is first built on the ``meta`` device (no memory) and its parameter shapes compared
    with the stored weights, so that a stored config cannot make batlit allocate more than the
    checkpoint itself holds.
    """
    ckpt, config = read_batlit_checkpoint(path, key)
    # the weights the run reported: the trained model, or CFA's averaged one saved beside it
    reported = ckpt["batlit"].get("reported_weights", "model")
    if reported not in REPORTED_WEIGHTS:
        raise ConfigError(f"{key}: '{path}' names reported weights {reported!r}, not one of {', '.join(REPORTED_WEIGHTS)}")
    prefix = f"{reported}."
    state = {k[len(prefix):]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith(prefix)}
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_model(config, key, path).state_dict().items()}
    if shapes.keys() != state.keys() or any(tuple(state[k].shape) != tuple(shapes[k]) for k in shapes):
        missing, unexpected = sorted(shapes.keys() - state.keys()), sorted(state.keys() - shapes.keys())
        wrong = [k for k in shapes.keys() & state.keys() if tuple(state[k].shape) != tuple(shapes[k])]
        raise ConfigError(f"{key}: '{path}' does not fit model {config.model._target_} "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shape {sorted(wrong)[:3]})")
    model = build_model(config, key, path)
    model.load_state_dict(state)
    model.eval()
    path = Path(path).resolve()
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return LoadedRun(model, config, list(ckpt["batlit"]["class_names"]), run_dir)


# What a checkpoint must share with the run that resumes it: the method, the architecture and its
# shape, the dataset and its classes. Schedules, epochs and attack settings may change on resume.
RESUME_KEYS = ("method._target_", "model._target_", "model.num_classes", "model.in_channels", "model.width",
               "model.depth", "model.widen_factor", "data._target_", "data.num_classes", "data.image_size")


def check_resumable(path: str | Path, cfg: DictConfig, key: str = "ckpt_path") -> None:
    """One line naming the first key where the checkpoint's run and this run differ."""
    _, saved = read_batlit_checkpoint(path, key)
    for name in RESUME_KEYS:
        old = OmegaConf.select(saved, name, default=None)
        new = OmegaConf.select(cfg, name, default=None, throw_on_missing=False)
        if old is not None and new is not None and old != new:
            raise ConfigError(f"{key}: '{path}' was trained with {name}={old}, this run has {name}={new}")


def keep_csv_history(loggers: list[Any], ckpt_path: str | Path) -> None:
    """On resume, keep the CSV rows of the epochs the checkpoint holds.

    Lightning's CSVLogger deletes ``metrics.csv`` when it opens a non-empty log directory, so a
    resumed run would lose every earlier epoch's metrics. The rows up to the checkpoint's epoch are
    written back and the writer continues the file; rows of the epoch that was killed (and of a
    killed test) are dropped, since the resumed run logs them again.
    """
    import csv
    import io

    from lightning.pytorch.loggers import CSVLogger

    from lightning.pytorch.utilities import rank_zero_only

    csv_loggers = [lg for lg in loggers if isinstance(lg, CSVLogger)]
    if not csv_loggers or rank_zero_only.rank != 0:  # only rank 0 writes the log (DDP)
        return
    done_epoch = read_checkpoint(ckpt_path).get("epoch", -1)
    for logger in csv_loggers:
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        # a regular file of this run's log folder, never a link placed there; rewritten atomically
        reader = csv.DictReader(io.StringIO(read_regular_text(path, inside=logger.log_dir), newline=""))
        header, rows = list(reader.fieldnames or []), list(reader)

        def kept(row: dict[str, str]) -> bool:
            if any(v for k, v in row.items() if k and k.startswith("test/")):
                return False
            return not row.get("epoch") or int(float(row["epoch"])) <= done_epoch

        writer = logger.experiment  # opening it deletes metrics.csv
        with atomic_text_writer(path) as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(row for row in rows if kept(row))
        writer.metrics_keys = header  # new keys later rewrite the header; rows so far keep their columns


def datamodule_for(config: DictConfig, root: str | None = None, download: bool = False,
                   eval_seed: int | None = None, **overrides: Any):
    """The run's DataModule (test split) from a checked stored config (batlit.registry.DATAMODULES),
    with data.* overrides such as eval batch size.

    ``test_subset=N`` with ``eval_seed``: the evaluated images are a class-balanced subset drawn
    from ``eval_seed`` alone (``data.test_subset_seed``), the same for every run on the same data
    whatever its training seed; N beyond the test split is one ConfigError line (naming
    ``n_samples``, the evaluation's key). Without ``eval_seed``: the run's own seeded stratified subset.

    A checkpoint does not choose where batlit writes: the cache folder is this machine's own
    (``cache_dir`` as stored is not used) and nothing is downloaded unless the caller says
    ``download=True`` (``batlit.evaluate download=true``), and then only into ``root`` or the
    project's default data folder (``data/<dataset>``, :func:`default_data_root`), never into the
    stored ``data.root``. Without a download the data is read from ``root`` when given, else from
    the folder the run used (``data.root`` as stored). A stored value the data module refuses, or
    data it cannot read, is one ConfigError line."""
    target = str(config.data._target_)
    if target not in DATAMODULES:
        raise ConfigError(f"ckpt: the run's data {target} is not one of batlit's data modules")
    if eval_seed is not None:
        overrides = {"test_subset_seed": int(eval_seed), **overrides}
    kwargs = {**_plain_kwargs(config.data), **overrides}
    if "cache_dir" in kwargs and "cache_dir" not in overrides:
        kwargs["cache_dir"] = None
    if "download" in kwargs:
        kwargs["download"] = bool(download)
    if root is not None:
        kwargs["root"] = str(root)
    elif download and "root" in kwargs:
        kwargs["root"] = str(default_data_root(DATAMODULES[target]))
    try:
        datamodule = DATAMODULES[target](**kwargs)
    except TypeError as err:
        raise ConfigError(f"ckpt: the run's data settings do not fit {target}: {err}") from err
    except ValueError as err:  # a stored value the data module refuses (e.g. data.crop_padding=-1)
        raise ConfigError(f"ckpt: the run's stored {str(err).splitlines()[0] if str(err) else 'data settings'}") from err

    try:  # the files: an unreadable image, an empty class folder, a corrupt zip -> one line
        datamodule.prepare_data()
        datamodule.setup("test")
    except SubsetTooLargeError as err:
        raise ConfigError(f"n_samples={err.asked} is more than the {err.available} test images of {err.name} "
                          "(n_samples=null evaluates all of them)") from None
    except ValueError as err:
        raise ConfigError(f"data: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    return datamodule


def default_data_root(module: Any) -> Path:
    """Where a download goes when no ``data_root=`` is given: ``data/<dataset>`` under the project
    (``paths.data_dir``), named by batlit's own data module, not by anything stored."""
    return Path(project_root()) / "data" / str(getattr(module, "dataset_name", "images"))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file beside ``path``, fsync, then rename over it.

    A kill at any moment leaves either the previous file or the new one, never a truncated file:
    ``os.replace`` within one directory is atomic on POSIX and Windows.
    """
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ModelCheckpoint's state that names files: Lightning removes "stale" checkpoints by these paths
_CHECKPOINT_PATH_KEYS = ("best_model_path", "last_model_path", "kth_best_model_path")


def _inside(value: Any, folder: str | Path | None) -> bool:
    """A plain local path (no ``scheme://``) that resolves, ``..`` and links followed, inside ``folder``."""
    if not isinstance(value, str) or folder is None or not value or "://" in value or "::" in value:
        return False
    return Path(os.path.realpath(value)).is_relative_to(os.path.realpath(folder))


def checked_callback_state(ckpt: dict[str, Any], checkpoint_dir: str | Path | None) -> dict[str, Any]:
    """The ``callbacks`` state of a checkpoint with every checkpoint path that is not a plain path
    inside this run's ``checkpoint_dir`` dropped, before Lightning restores it.

    Lightning's ModelCheckpoint later removes "stale" checkpoints by these paths (recursively, for
    what it takes as a remote URL such as ``local://``), so a path from elsewhere (another run's
    folder, ``<run>/checkpoints/../../file``) would name what this run deletes. When any path of a
    callback's state is dropped, its best/last/top-k records are all reset (they must agree)."""
    states = ckpt.get("callbacks")
    if not isinstance(states, dict):
        ckpt.pop("callbacks", None)
        return ckpt
    for name, state in states.items():
        if not isinstance(state, dict) or not any(k in state for k in (*_CHECKPOINT_PATH_KEYS, "best_k_models")):
            continue
        paths = [state.get(k, "") for k in _CHECKPOINT_PATH_KEYS]
        top_k = state.get("best_k_models", {})
        paths += list(top_k) if isinstance(top_k, dict) else [None]
        if all(p == "" or _inside(p, checkpoint_dir) for p in paths):
            continue
        log.info("%s: checkpoint paths outside this run's %s dropped from the stored state", str(name)[:60],
                 checkpoint_dir)
        state.update({k: "" for k in _CHECKPOINT_PATH_KEYS}, best_k_models={})
    return ckpt


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic writes (:func:`atomic_torch_save`), checked ``weights_only=True``
    reads (:func:`read_batlit_checkpoint`, :func:`checked_callback_state`), and removals confined to
    this run's ``checkpoint_dir``: a regular file inside it, never a folder, a link or anything else
    (:meth:`remove_checkpoint`). Without ``checkpoint_dir`` nothing is removed."""

    def __init__(self, checkpoint_dir: str | Path | None = None) -> None:
        super().__init__()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return checked_callback_state(read_batlit_checkpoint(path, "ckpt_path")[0], self.checkpoint_dir)

    def remove_checkpoint(self, path: Any) -> None:
        """Delete ``path`` only when it is a regular file (not a link) inside this run's checkpoint
        folder; anything else is left as it is, with a warning. Never recursive."""
        import stat

        shown = str(path)
        if not _inside(shown, self.checkpoint_dir):
            log.warning("not removing '%s': not inside this run's checkpoint folder %s", shown[:200], self.checkpoint_dir)
            return
        try:
            mode = os.lstat(shown).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISREG(mode):
            log.warning("not removing '%s': not a regular file", shown[:200])
            return
        os.unlink(shown)
