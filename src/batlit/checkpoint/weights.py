"""Weights trained elsewhere, audited like a batlit run: ``weights=FILE model=<arch> data=<dataset>``.

``batlit.evaluate`` and ``batlit.analyze`` take, instead of a batlit checkpoint, a file of weights
for one of batlit's architectures (conf/model) and the test split of one of its datasets
(conf/data). The run config a checkpoint would carry is composed here from batlit's own config
files alone (:func:`audit_config`); nothing in the file chooses code, a model or a data module.

Reading the file (:func:`read_weights`) follows the checkpoint rules of docs/reliability.md,
"Trust": a zip archive passes :func:`batlit.checkpoint.check_archive` (sizes, no compressed
member); any file, zip or torch's pre-1.6 format, is first loaded under ``FakeTensorMode`` (shapes
only, no data read or allocated) and the bytes its tensors declare must fit in the file; then
``torch.load(weights_only=True)``. Accepted layouts (:func:`find_state_dict`, :func:`match_keys`):
a plain state dict; one under ``state_dict``, ``model_state_dict``, ``model``, ``net`` or ``last``
(RobustBench's keys); keys prefixed ``module.`` (DataParallel/DDP) or ``model.`` (RobustBench's
loader strips both); RobustBench's names for the TRADES WideResNet (``block1.layer.0.*``,
``convShortcut``, the unused ``sub_block1``) and for its PreAct ResNet-18 (``shortcut.0``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from ..config import (ConfigError, exit_on_user_error, project_root, register_resolvers, require_on_command_line,
                      run_dir_of, validate)

if TYPE_CHECKING:  # annotations only: importing batlit.evaluate stays light until a file is read
    import torch

#: The input normalizations ``normalization=`` names (mean, std per channel); or give
#: ``normalization={mean:[...],std:[...]}``. ``none``: the model takes [0, 1] images as they are.
NORMALIZATIONS: dict[str, tuple[list[float], list[float]] | None] = {
    "none": None,
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]),
    "cifar100": ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}
#: Keys a saved dict usually keeps its state dict under (RobustBench: ``state_dict``, ``last``).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "last")
#: Prefixes that wrappers add to every key: DataParallel/DDP, and a model held as ``self.model``.
PREFIXES = ("module.", "model.")
#: The architectures' other spellings: RobustBench's TRADES WideResNet and its PreAct ResNet-18.
RENAMES = {
    "batlit.models.wrn28_10": [(r"^(block\d)\.layer\.", r"\1."), (r"\.convShortcut\.", ".conv_shortcut.")],
    "batlit.models.wrn34_10": [(r"^(block\d)\.layer\.", r"\1."), (r"\.convShortcut\.", ".conv_shortcut.")],
    "batlit.models.preact_resnet18": [(r"\.shortcut\.0\.", ".shortcut.")],
}
#: Keys of modules the architecture defines but never runs (RobustBench's ``sub_block1``), dropped.
UNUSED = {"batlit.models.wrn28_10": ("sub_block1.",), "batlit.models.wrn34_10": ("sub_block1.",)}
#: Default L∞ budget of an audit when ``eps=`` is not given (the CIFAR threat model of the paper).
DEFAULT_EPS = 8 / 255


def _conf_dir() -> Path:
    from ..registry import CONF_DIR

    return CONF_DIR


def choices(group: str) -> list[str]:
    """The option names of a config group shipped with batlit (conf/model, conf/data)."""
    return sorted(p.stem for p in (_conf_dir() / group).glob("*.yaml"))


def normalization_of(value: Any, key: str = "normalization") -> dict[str, Any]:
    """``{"name", "mean", "std"}`` from a preset name or a ``{mean, std}`` mapping; one line otherwise."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, str) and value in NORMALIZATIONS:
        pair = NORMALIZATIONS[value]
        return {"name": value, "mean": pair[0] if pair else None, "std": pair[1] if pair else None}
    if isinstance(value, dict) and set(value) == {"mean", "std"}:
        mean, std = value["mean"], value["std"]
        ok = all(isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                 for v in (mean, std))
        if ok and len(mean) == len(std) and all(s > 0 for s in std):
            return {"name": "custom", "mean": [float(x) for x in mean], "std": [float(x) for x in std]}
    raise ConfigError(f"{key} must be one of {', '.join(NORMALIZATIONS)} or {{mean: [...], std: [...]}} (lists of "
                      f"the same length, std > 0), got {value!r}")


def audit_config(model: Any, data: Any, normalization: Any, seed: int) -> DictConfig:
    """The run config a checkpoint would carry, composed from batlit's conf/model/<model>.yaml,
    conf/data/<data>.yaml and conf/paths/default.yaml with ``model.mean``/``model.std`` from
    ``normalization`` (:func:`normalization_of`); checked like a stored one (``config.validate``)."""
    import yaml

    register_resolvers()
    for key, value in (("model", model), ("data", data)):
        if not isinstance(value, str) or value not in choices(key):
            raise ConfigError(f"{key}: weights= needs {key}=<{'|'.join(choices(key))}>, got {value!r}")
    norm = normalization_of(normalization)
    conf = _conf_dir()
    node = {"seed": int(seed), "trainer": {"accelerator": "auto"},
            "paths": yaml.safe_load((conf / "paths" / "default.yaml").read_text()),
            "model": yaml.safe_load((conf / "model" / f"{model}.yaml").read_text()),
            "data": yaml.safe_load((conf / "data" / f"{data}.yaml").read_text()),
            "attack": {"eps": DEFAULT_EPS}}
    node["model"]["mean"], node["model"]["std"] = norm["mean"], norm["std"]
    config = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(node), resolve=True))
    if norm["mean"] is not None and len(norm["mean"]) != config.data.in_channels:
        raise ConfigError(f"normalization: {len(norm['mean'])} channels, data={data} has {config.data.in_channels}")
    validate(config, check_paths=False)
    return config


def _declared_bytes(path: Path, key: str) -> int:
    """What the file's tensors declare, read without reading or allocating their data: torch.load
    under FakeTensorMode builds shape-only storages (zip and pre-1.6 formats alike)."""
    import torch

    from torch._subclasses.fake_tensor import FakeTensorMode

    try:
        with FakeTensorMode():
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle that names code, a truncated or foreign file
        raise _unreadable(path, key, err) from None
    storages: dict[int, int] = {}

    def walk(node: Any, depth: int = 0) -> None:
        if depth > 20:
            return
        if isinstance(node, torch.Tensor):
            storage = node.untyped_storage()
            storages[storage._cdata] = max(storages.get(storage._cdata, 0), storage.nbytes())
        elif isinstance(node, dict):
            for value in node.values():
                walk(value, depth + 1)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value, depth + 1)

    walk(obj)
    return sum(storages.values())


def _unreadable(path: Path, key: str, err: Exception) -> ConfigError:
    text = str(err).strip().splitlines()
    detail = next((line.strip() for line in text if "Unsupported" in line or "global" in line.lower()),
                  text[0] if text else "")
    return ConfigError(f"{key}: '{path}' is not a file of plain tensors torch.load(weights_only=True) reads "
                       f"({type(err).__name__}: {detail[:200]})")


#: The first bytes of torch's pre-1.6 (non-zip) format: the pickled magic number 0x1950a86a20f9469cfc6c.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def read_weights(path: str | Path, key: str = "weights") -> Any:
    """The file's contents, tensors and plain data only, after the checks of the module docstring."""
    import torch

    import zipfile

    from .store import check_archive

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: no weights file at '{path}'")
    size = path.stat().st_size
    if zipfile.is_zipfile(path):
        check_archive(path, key)
    else:
        with path.open("rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
        if head != _LEGACY_MAGIC:
            raise ConfigError(f"{key}: '{path}' is not a file torch.save writes (neither its zip archive nor its "
                              "pre-1.6 format)")
    declared = _declared_bytes(path, key)
    if declared > size:
        raise ConfigError(f"{key}: '{path}' declares {declared} bytes of tensors, more than the file's {size}; "
                          "refused before reading them")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise _unreadable(path, key, err) from None


def _is_state_dict(node: Any) -> bool:
    import torch

    return (isinstance(node, dict) and len(node) > 0 and all(isinstance(k, str) for k in node)
            and all(isinstance(v, torch.Tensor) for v in node.values()))


def find_state_dict(obj: Any, path: Path, key: str = "weights") -> dict[str, torch.Tensor]:
    """A plain state dict, or one under :data:`STATE_DICT_KEYS` (one level, or two: RobustBench's
    ``{"last": {"state_dict": ...}}``-style nesting)."""
    for depth in range(3):
        if _is_state_dict(obj):
            return dict(obj)
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    shown = sorted(str(k)[:40] for k in obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise ConfigError(f"{key}: '{path}' holds no state dict of tensors (a dict of tensors, or one under "
                      f"{', '.join(STATE_DICT_KEYS)}); found {shown}")


def match_keys(state: dict[str, torch.Tensor], target: str, expected: dict[str, torch.Size]
               ) -> dict[str, torch.Tensor]:
    """The state dict under the architecture's own key names: wrapper prefixes stripped, the other
    spellings of :data:`RENAMES` rewritten and :data:`UNUSED` modules dropped, where a key is not
    already one the architecture has."""
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            state = {k[len(prefix):]: v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name not in expected:
            if name.startswith(UNUSED.get(target, ())):
                continue
            for pattern, replacement in RENAMES.get(target, ()):
                name = re.sub(pattern, replacement, name)
        out[name] = value
    return out


def fit_error(state: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> str | None:
    """The first key that does not fit, in the architecture's order (missing, wrong shape) or the
    file's (unexpected), as one phrase; None when every key fits."""
    for name, shape in expected.items():
        if name not in state:
            return f"missing key '{name}' (shape {list(shape)})"
        if tuple(state[name].shape) != tuple(shape):
            return f"key '{name}' has shape {list(state[name].shape)}, the architecture's is {list(shape)}"
    for name in state:
        if name not in expected:
            hint = " (the file carries its own input normalization: set normalization= to it)" \
                if name.rsplit(".", 1)[-1] in ("mean", "std", "mu", "sigma") else ""
            return f"unexpected key '{name}'{hint}"
    return None


def load_weights(path: str | Path, config: DictConfig, key: str = "weights", build: bool = True
                 ) -> torch.nn.Module | None:
    """The model of ``config`` (:func:`audit_config`) with the file's weights, in eval mode. The
    normalization buffers come from the setting, not the file (a file that stores its own must
    agree with it). ``build=False``: every check, on the meta device, and no model."""
    import torch

    from .store import build_model

    path = Path(path)
    state = find_state_dict(read_weights(path, key), path, key)
    target = str(config.model._target_)
    with torch.device("meta"):
        own = build_model(config, key, path).state_dict()
    norm_keys = [k for k in own if k.startswith("normalize.")]
    expected = {k: v.shape for k, v in own.items()}
    state = match_keys(state, target, expected)
    stored_norm = {k: state.pop(k) for k in list(state) if k in norm_keys}
    expected_weights = {k: v for k, v in expected.items() if k not in norm_keys}
    problem = fit_error(state, expected_weights)
    if problem is not None:
        raise ConfigError(f"{key}: '{path}' does not fit model={target.rsplit('.', 1)[-1]}: {problem}")
    if not build:
        return None
    model = build_model(config, key, path)
    full = model.state_dict()
    for name, value in stored_norm.items():
        if value.shape != full[name].shape or not torch.allclose(value.float(), full[name].float(), atol=1e-4):
            raise ConfigError(f"{key}: '{path}' stores {name}={value.flatten().tolist()[:4]}, the normalization "
                              f"setting gives {full[name].flatten().tolist()[:4]}; set normalization= to match")
    full.update(state)
    model.load_state_dict(full)
    return model.eval()


def audit_dir(weights: str) -> str:
    """The default output folder of an audit: outputs/audit/<weights file stem> under the project."""
    return str(Path(project_root()) / "outputs" / "audit" / Path(str(weights)).stem)


def source_dir(ckpt: Any, weights: Any) -> str:
    """``out_dir``'s default: the checkpoint's run folder, or :func:`audit_dir` for ``weights=``."""
    return audit_dir(weights) if ckpt is None and weights is not None else run_dir_of(str(ckpt))


def register_resolver() -> None:
    """``${batlit_source_dir:${ckpt},${weights}}`` for conf/evaluate/evaluate.yaml and conf/analyze.yaml."""
    if not OmegaConf.has_resolver("batlit_source_dir"):
        OmegaConf.register_new_resolver("batlit_source_dir", source_dir)


def check_source(cfg: DictConfig) -> None:
    """Exactly one of ``ckpt=`` and ``weights=``; with weights, model= and data= (one line each)."""
    ckpt, weights = cfg.get("ckpt"), cfg.get("weights")
    if ckpt is not None and weights is not None:
        raise ConfigError("give ckpt=<batlit checkpoint> or weights=<file> model=... data=..., not both")
    if ckpt is None and weights is None:
        raise ConfigError("ckpt= or weights= is required")
    if weights is not None and not Path(str(weights)).is_file():
        raise ConfigError(f"weights: no weights file at '{weights}'")


def choice(cfg: DictConfig, group: str) -> Any:
    """The option named by ``group=``: a plain key (batlit.evaluate) or a Hydra config group whose
    composed node stands in the config (batlit.analyze); then its name comes from Hydra."""
    value = cfg.get(group)
    if value is None or isinstance(value, str):
        return value
    name = OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)
    if name is None:
        from hydra.core.hydra_config import HydraConfig

        name = HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None
    return name


def audited_run(cfg: DictConfig, build: bool = True):
    """A :class:`batlit.checkpoint.LoadedRun` for ``weights=`` (class names from the data module's
    folder or dataset, read when the test split is set up: :func:`class_names_of`)."""
    from .store import LoadedRun

    config = audit_config(choice(cfg, "model"), choice(cfg, "data"), cfg.get("normalization", "none"), int(cfg.seed))
    model = load_weights(cfg.weights, config, build=build)
    return LoadedRun(model, config, [], Path(str(cfg.weights)).resolve().parent)


def audit_record(cfg: DictConfig, config: DictConfig) -> dict[str, Any]:
    """What the output JSON says about the audited weights."""
    norm = normalization_of(cfg.get("normalization", "none"))
    return {"weights": str(Path(str(cfg.weights)).resolve()), "model": choice(cfg, "model"), "data": choice(cfg, "data"),
            "normalization": norm}


def require_source_on_command_line(example: str) -> None:
    """One line when neither ``ckpt=`` nor ``weights=`` is on the command line (Hydra would report
    the missing value the output folder interpolates as a traceback)."""
    import sys

    if any(a.split("=", 1)[0].lstrip("+~") == "weights" for a in sys.argv[1:]):
        return
    require_on_command_line("ckpt", example)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class CheckWeightsFirst(_HydraCallback):
    """Hydra callback: with ``weights=``, every check of the file and of its fit to ``model=``
    (on the meta device) before Hydra creates the output folder, so a refused file leaves nothing."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "weights", default=None) is None:
            return

        def check() -> None:
            check_source(config)
            audited_run(config, build=False)

        exit_on_user_error(check)

    on_multirun_start = on_run_start
