"""Class-wise evaluation of a trained checkpoint: ``python -m batlit.evaluate ckpt=PATH attack=NAME``.

Attacks (config group ``attack`` in ``conf/evaluate/``):

- ``pgd20``: PGD-20 on cross-entropy, step ε/4, uniform start (the paper's evaluation, docs/design.md §3);
- ``cw``: CW∞, PGD on the CW margin loss with κ = 50, 30 steps (the FAT/GAIRAT evaluation code);
- ``autoattack``: the original AutoAttack (Croce & Hein 2020), built from the authors' code
  (``pyautoattack``, as RobustBench runs it; batlit.attacks.autoattack): ``standard`` = APGD-CE,
  APGD-T, FAB-T (100 iterations each, 9 target classes), Square (5000 queries); ``attack.version``
  ``plus`` or ``rand``, or one component (``apgd_ce`` runs the first alone); the same per-class
  results as ``pyautoattack.AutoAttack`` on the same images (tests/fidelity/test_autoattack_original.py);
- ``autoattack_fast``: torchattacks' AutoAttack, 10 iterations per component — not the original
  AutoAttack and weaker: never the default, never reported as AutoAttack;
- ``clean``: no attack.

Only samples classified correctly so far are attacked by the next component (as AutoAttack does),
so a sample counts as robust when it is right clean and under every component or restart — the
robust error of docs/design.md §4. Writes ``eval_<attack>.json``, ``eval_<attack>.csv`` and the
per-image outcomes ``eval_<attack>.npz`` beside the run's ``metrics.json``; ``batlit.report`` picks
them up as extra columns and paired comparisons. ``n_samples`` images are chosen class-balanced by
``eval_seed``, not by the run's seed, so every run sees the same ones. A killed evaluation resumes
from ``.eval_<attack>.partial.npz`` (docs/evaluation.md). Everything runs in fp32;
``precision=bf16`` runs it under bf16 autocast instead and writes ``eval_<attack>_bf16.*``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any, Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import ATTACK_LOSSES, ConfigError, exit_on_user_error, register_resolvers, resolve_device
from .safe_io import atomic_text_writer, atomic_write_bytes, atomic_write_text, check_out_dir, csv_cell
from .checkpoint.weights import register_resolver

register_resolvers()
register_resolver()  # out_dir's default for weights= (batlit.checkpoint.weights)

KINDS = ("pgd", "autoattack", "autoattack_fast", "none")
EVAL_PRECISIONS = ("fp32", "bf16")  # fp32: the reported numbers; bf16: faster, docs/performance.md
AUTOATTACK_VERSIONS = ("standard", "plus", "rand", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")

Attack = Callable[[Any, Any], Any]  # (images, labels) -> adversarial images


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def attack_name() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get("attack") or "attack"


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no model or data, each a one-line :class:`ConfigError`."""
    from .checkpoint.weights import check_source

    check_source(cfg)  # ckpt= or weights= (a file trained elsewhere, batlit.checkpoint.weights)
    if cfg.get("weights") is None and not Path(str(cfg.ckpt)).is_file():
        raise ConfigError(f"ckpt: no checkpoint file at '{cfg.ckpt}'")
    resolve_device(cfg.device)  # device=cuda on a machine without one: one line, before the checkpoint loads
    spec = cfg.attack
    if spec.get("kind") not in KINDS:
        raise ConfigError(f"attack.kind must be one of {', '.join(KINDS)}, got {spec.get('kind')!r}")
    if cfg.n_samples is not None and (not _is_int(cfg.n_samples) or cfg.n_samples < 1):
        raise ConfigError(f"n_samples must be an integer >= 1 or null, got {cfg.n_samples!r}")
    if not _is_int(cfg.batch_size) or cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {cfg.batch_size!r}")
    if cfg.eps is not None and not (isinstance(cfg.eps, (int, float)) and cfg.eps > 0):
        raise ConfigError(f"eps must be > 0 or null (attack=clean gives the clean errors), got {cfg.eps!r}")
    if spec.kind == "pgd":
        if spec.loss not in ATTACK_LOSSES:
            raise ConfigError(f"attack.loss must be one of {', '.join(ATTACK_LOSSES)}, got {spec.loss!r}")
        if not _is_int(spec.steps) or spec.steps < 1:
            raise ConfigError(f"attack.steps must be an integer >= 1, got {spec.steps!r}")
        if spec.step_size is not None and not spec.step_size > 0:
            raise ConfigError(f"attack.step_size must be > 0 or null, got {spec.step_size!r}")
        if not _is_int(spec.get("restarts", 1)) or spec.get("restarts", 1) < 1:
            raise ConfigError(f"attack.restarts must be an integer >= 1, got {spec.restarts!r}")
    if spec.kind in ("autoattack", "autoattack_fast") and spec.get("version") not in AUTOATTACK_VERSIONS:
        raise ConfigError(f"attack.version must be one of {', '.join(AUTOATTACK_VERSIONS)}, got {spec.get('version')!r}")
    if not _is_int(cfg.get("eval_seed", 0)) or cfg.get("eval_seed", 0) < 0:
        raise ConfigError(f"eval_seed must be an integer >= 0, got {cfg.get('eval_seed')!r}")
    if not isinstance(cfg.get("fold_batchnorm", True), bool):
        raise ConfigError(f"fold_batchnorm must be true or false, got {cfg.fold_batchnorm!r}")
    if cfg.get("precision", "fp32") not in EVAL_PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(EVAL_PRECISIONS)}, got {cfg.get('precision')!r}")


def _component_name(attack: Any) -> str:
    if hasattr(attack, "display_name"):  # batlit.attacks.autoattack.OriginalComponent
        return attack.display_name
    kind = type(attack).__name__  # torchattacks' classes (autoattack_fast)
    if kind == "APGD":
        return f"APGD-{attack.loss.upper()}"
    if kind == "APGDT":
        return "APGD-T"
    if kind == "FAB":
        return "FAB-T" if attack.multi_targeted else "FAB"
    return kind


def build_attack(spec: DictConfig, model, eps: float, num_classes: int, seed: int) -> list[tuple[str, Attack]]:
    """The attack as a list of named components, each a torchattacks-style ``(images, labels) -> adv``.

    ``kind: autoattack`` is the authors' AutoAttack (``pyautoattack``, batlit.attacks.autoattack);
    ``kind: autoattack_fast`` is torchattacks' AutoAttack, whose APGD, APGD-T and FAB run 10 iterations
    instead of the original's 100: weaker, never the default, never reported as AutoAttack.
    """
    if spec.kind == "none":
        return []
    if spec.kind == "pgd":
        from .attacks import PGD

        attack = PGD(model, eps=eps, step_size=spec.step_size or eps / 4, steps=int(spec.steps), loss=spec.loss)
        restarts = int(spec.get("restarts", 1))
        return [(f"PGD-{spec.steps} ({spec.loss})" + (f" restart {r + 1}" if restarts > 1 else ""), attack)
                for r in range(restarts)]
    if spec.kind == "autoattack":
        from .attacks.autoattack import autoattack_components, check_autoattack_classes

        if (why := check_autoattack_classes(spec.version, num_classes)) is not None:
            raise ConfigError(why)
        return [(_component_name(a), a) for a in autoattack_components(model, eps, spec.version, seed)]
    import torchattacks

    single = {"apgd-ce": lambda: torchattacks.APGD(model, norm="Linf", eps=eps, loss="ce", seed=seed),
              "apgd-dlr": lambda: torchattacks.APGD(model, norm="Linf", eps=eps, loss="dlr", seed=seed),
              "apgd-t": lambda: torchattacks.APGDT(model, norm="Linf", eps=eps, n_classes=num_classes, seed=seed),
              "fab-t": lambda: torchattacks.FAB(model, norm="Linf", eps=eps, multi_targeted=True,
                                                n_classes=num_classes, seed=seed),
              "square": lambda: torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, seed=seed)}
    if spec.version in single:
        parts = [single[spec.version]()]
    else:
        parts = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version=spec.version,
                                        n_classes=num_classes, seed=seed)._autoattack.attacks
    return [(_component_name(a), a) for a in parts]


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch ``batch``'s attack randomness (PGD's uniform start, any restarts): a function
    of (seed, batch index) alone, so a resumed evaluation draws what an uninterrupted one draws."""
    return (int(seed) * 1_000_003 + 7_919 * (int(batch) + 1)) % (2**63)


def evaluate(model, loader, components: list[tuple[str, Attack]], num_classes: int, device,
             progress: bool = True, desc: str = "", precision: str = "fp32", seed: int | None = None,
             done: dict[str, Any] | None = None, on_batch: Callable[[int, dict[str, Any]], None] | None = None
             ) -> dict[str, Any]:
    """Clean and attacked predictions of every test image; per-class counts after each component.

    ``precision``: ``fp32`` runs everything without autocast, whatever surrounds the call;
    ``bf16`` expects ``model`` (and the attacks' model) wrapped in :class:`batlit.attacks.AutocastLogits`.

    Per image, ``clean_pred`` and ``adv_pred`` (one row per component): a component attacks only the
    images still classified correctly, and an image it does not attack keeps the prediction it had
    before (the previous component's, or the clean one), so ``adv_pred[c] == label`` says whether
    the image is robust after components 0..c.

    ``seed``: before batch b the global torch RNG is seeded with :func:`batch_seed` (seed, b), so each
    batch's randomness does not depend on the batches before it. ``done``: the per-image predictions
    of the first ``done["batches"]`` batches (a resumed run); those batches are skipped. ``on_batch``:
    called after each new batch with its index and the predictions so far (CPU tensors).
    """
    import torch
    from tqdm.auto import tqdm

    from .attacks import attack_precision
    from .models.fold import folded_batchnorm

    C = len(components)
    skip = int(done["batches"]) if done else 0
    labels = [done["label"]] if done else []
    cleans = [done["clean_pred"]] if done else []
    advs = [done["adv_pred"]] if done else []
    seen = sum(len(v) for v in labels)
    correct_clean = sum(int((c == y).sum()) for c, y in zip(cleans, labels))
    robust_last = sum(int((a[-1] == y).sum()) for a, y in zip(advs, labels)) if C else correct_clean
    bar = tqdm(loader, desc=desc, disable=not progress, unit="batch", dynamic_ncols=True, initial=0)
    # eval mode and fixed weights throughout: BatchNorm folded once for every attack component,
    # torchattacks' included (model.fold_batchnorm, batlit.models.fold)
    with folded_batchnorm(model):
        for b, (x, y) in enumerate(bar):
            if b < skip:  # done before the run was stopped: its predictions came from the partial file
                continue
            if seed is not None:
                torch.manual_seed(batch_seed(seed, b))
            x, y = x.to(device), y.to(device)
            with attack_precision("fp32" if precision == "fp32" else "inherit", device.type):
                with torch.no_grad():
                    clean = model(x).argmax(1)
                adv = torch.empty(C, len(y), dtype=clean.dtype, device=device)
                current = clean.clone()
                robust = clean == y  # only samples still right are attacked further (AutoAttack's rule)
                for i, (_, attack) in enumerate(components):
                    idx = robust.nonzero().squeeze(1)
                    if len(idx):
                        x_adv = attack(x[idx], y[idx])
                        with torch.no_grad():
                            pred = model(x_adv).argmax(1)
                        current[idx] = pred
                        robust[idx] = pred == y[idx]
                    adv[i] = current
            # one copy to the host per batch, after its attacks: the partial file and the counts
            labels.append(y.cpu())
            cleans.append(clean.cpu())
            advs.append(adv.cpu())
            seen += len(y)
            correct_clean += int((cleans[-1] == labels[-1]).sum())
            robust_last = robust_last + int((advs[-1][-1] == labels[-1]).sum()) if C else correct_clean
            if on_batch is not None:
                on_batch(b, {"batches": b + 1, "label": torch.cat(labels), "clean_pred": torch.cat(cleans),
                             "adv_pred": torch.cat(advs, 1)})
            if progress:
                bar.set_postfix(clean=f"{correct_clean / max(seen, 1):.3f}", robust=f"{robust_last / max(seen, 1):.3f}")
    label = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    clean_pred = torch.cat(cleans) if cleans else torch.zeros(0, dtype=torch.long)
    adv_pred = torch.cat(advs, 1) if advs else torch.zeros(C, 0, dtype=torch.long)
    return {**outcome_counts(label, clean_pred, adv_pred, num_classes, [n for n, _ in components]),
            "label": label, "clean_pred": clean_pred, "adv_pred": adv_pred}


def outcome_counts(label, clean_pred, adv_pred, num_classes: int, names: list[str]) -> dict[str, Any]:
    """The class-wise results and the robust accuracy after each component, from per-image
    predictions alone (so a resumed evaluation counts exactly what an uninterrupted one does)."""
    import torch

    from .metrics import ClassWiseRobustness

    label, clean_pred, adv_pred = label.long(), clean_pred.long(), adv_pred.long()
    metric = ClassWiseRobustness(num_classes)
    metric.update(clean_pred, adv_pred[-1] if len(names) else clean_pred, label)
    results = {k: v.cpu() for k, v in metric.compute().items()}
    total = results["count_per_class"].clamp(min=1).double()
    seen = max(len(label), 1)
    robust_after = []
    for i, name in enumerate(names):
        per_class = torch.zeros(num_classes, dtype=torch.long).scatter_add_(0, label, (adv_pred[i] == label).long())
        robust_after.append((name, (per_class / total).tolist(), float(per_class.sum()) / seen))
    return {"results": results, "robust_after": robust_after}


def write_csv(path: Path, summary: dict[str, Any], class_names: list[str]) -> None:
    """One row per class, then avg and worst: accuracies and errors in %."""
    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.2f}"

    with atomic_text_writer(path) as f:  # a link at path is replaced, never followed
        w = csv.writer(f)
        w.writerow(["class", "n", "clean_acc", "robust_acc", "std_error", "bndy_error", "rob_error"])
        for i, name in enumerate(class_names):
            std, bndy, rob = (summary[f"{k}_per_class"][i] for k in ("std", "bndy", "rob"))
            w.writerow([csv_cell(name), summary["count_per_class"][i], pct(None if std is None else 1 - std),
                        pct(None if rob is None else 1 - rob), pct(std), pct(bndy), pct(rob)])
        w.writerow(["avg", sum(summary["count_per_class"]), pct(1 - summary["std_avg"]),
                    pct(1 - summary["rob_avg"]), pct(summary["std_avg"]), pct(summary["bndy_avg"]),
                    pct(summary["rob_avg"])])
        w.writerow(["worst", "", pct(1 - summary["std_worst"]), pct(1 - summary["rob_worst"]),
                    pct(summary["std_worst"]), pct(summary["bndy_worst"]), pct(summary["rob_worst"])])


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def subset_fingerprint(index, label, n_samples: int | None, eval_seed: int | None) -> dict[str, Any]:
    """What says two evaluations saw the same images: their count, the rule and seed that chose them,
    and a hash of their indices in the test split and their labels (int64 each, in evaluation order;
    the labels tell apart test splits that are drawn per seed, such as data=synthetic's)."""
    import numpy as np

    index, label = np.asarray(index, dtype=np.int64), np.asarray(label, dtype=np.int64)
    return {"n_samples": int(index.size), "subset": "all" if n_samples is None else "class-balanced",
            "eval_seed": None if n_samples is None else int(eval_seed),
            "indices_sha256": hashlib.sha256(index.tobytes() + label.tobytes()).hexdigest()}


def _npz_bytes(**arrays: Any) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def per_image_arrays(index, out: dict[str, Any], names: list[str], fingerprint: dict[str, Any],
                     num_classes: int) -> dict[str, Any]:
    """The per-image file's arrays (docs/evaluation.md, "Per-image outcomes")."""
    import numpy as np

    small = np.int16 if num_classes < 2**15 else np.int32  # class indices: compact
    return {"index": np.asarray(index, dtype=np.int64), "label": out["label"].numpy().astype(small),
            "clean_pred": out["clean_pred"].numpy().astype(small), "adv_pred": out["adv_pred"].numpy().astype(small),
            "components": np.array(names, dtype=str), "fingerprint": np.array(json.dumps(fingerprint, sort_keys=True))}


def read_partial(path: Path, out_dir: Path, config: dict[str, Any], n_images: int, n_components: int
                 ) -> dict[str, Any] | None:
    """The predictions a stopped run of this same evaluation left in ``path``, or None without one.

    A partial file of another evaluation (another checkpoint, attack, subset, batch size, ...) is
    refused in one line naming the first setting that differs: deleting it is the user's choice,
    since it may hold hours of work."""
    import numpy as np
    import torch

    from .report.results import read_npz
    from .safe_io import read_regular_bytes

    if not path.exists() and not path.is_symlink():
        return None
    bound = 2**20 + 8 * n_images * (n_components + 3)  # int64 at most per value, and the header
    data = read_regular_bytes(path, inside=out_dir, max_bytes=bound)
    try:
        arrays = read_npz(data, bound)
        saved = json.loads(str(arrays["config"]))
        batches, seconds = int(arrays["batches"]), float(arrays["seconds"])
        label, clean, adv = arrays["label"], arrays["clean_pred"], arrays["adv_pred"]
    except Exception as err:  # truncated, foreign or hand-edited: say so, keep the file
        raise ConfigError(f"{path}: not a partial evaluation batlit can read ({type(err).__name__}: "
                          f"{str(err)[:120]}); delete it to start this evaluation again") from None
    for key in config:
        if saved.get(key) != config[key]:
            raise ConfigError(f"{path}: a stopped evaluation with {key}={saved.get(key)!r}, this run has "
                              f"{key}={config[key]!r}; rerun with its settings to finish it, or delete the "
                              "file to start again")
    m = label.shape[0]
    if not (clean.shape == (m,) and adv.shape == (n_components, m) and m <= n_images and batches >= 0):
        raise ConfigError(f"{path}: its arrays do not fit {n_images} images and {n_components} components; "
                          "delete it to start this evaluation again")
    return {"batches": batches, "seconds": seconds, "label": torch.from_numpy(label.astype(np.int64)),
            "clean_pred": torch.from_numpy(clean.astype(np.int64)), "adv_pred": torch.from_numpy(adv.astype(np.int64))}


def _work(attack: Any) -> tuple[int, int] | None:
    """(gradient steps, forward-only queries) one image costs a component at most, read from the
    attack object's own settings (batlit's PGD, pyautoattack's and torchattacks' classes), or None
    when it names none of them."""
    if isinstance(getattr(attack, "work", None), tuple):  # batlit.attacks.autoattack.OriginalComponent
        return attack.work
    for obj in (attack, getattr(attack, "attack", None), getattr(attack, "__self__", None),
                getattr(attack, "func", None)):
        if obj is None:
            continue
        settings = getattr(obj, "kwargs", None)
        restarts = int(getattr(obj, "n_restarts", 1) or 1)
        targets = int(getattr(obj, "n_target_classes", 1) or 1) if (
            getattr(obj, "targeted", False) or getattr(obj, "multi_targeted", False)
            or type(obj).__name__ in ("APGDAttack_targeted", "APGDT")) else 1
        if getattr(obj, "n_queries", None) is not None:
            return 0, int(obj.n_queries) * restarts
        steps = getattr(obj, "n_iter", None) or getattr(obj, "steps", None) or (
            settings.get("steps") if isinstance(settings, dict) else None)
        if steps is not None:
            return int(steps) * restarts * targets, 0
    return None


def estimate(model, x, y, components: list[tuple[str, Attack]], n_images: int, device, precision: str
             ) -> tuple[float | None, str]:
    """An upper bound on the evaluation's seconds, said before it starts (as batlit.train does).

    One timed probe on one batch: a forward and backward to the input (an attack step) and a forward
    alone (a query), each run twice, the second timed; times each component's steps and queries per
    image (:func:`_work`) and the number of images. It assumes every image reaches every component;
    the later components attack only the images still robust, so the run is usually shorter."""
    import torch

    from .attacks import attack_precision
    from .models.fold import folded_batchnorm

    work = [(name, _work(attack)) for name, attack in components]
    if not components:
        return None, ""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x, y = x.to(device), y.to(device)

    def step() -> None:
        xg = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xg), y).backward(inputs=[xg])

    def query() -> None:
        with torch.no_grad():
            model(x)

    times = {}
    with folded_batchnorm(model), attack_precision("fp32" if precision == "fp32" else "inherit", device.type):
        for name, fn in (("step", step), ("query", query)):
            fn()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name] = (time.perf_counter() - start) / len(x)
    known = [(n, w) for n, w in work if w is not None]
    total = sum((w[0] * times["step"] + w[1] * times["query"]) * n_images for _, w in known)
    parts = ", ".join(f"{n} {w[0]} steps" if w[0] else f"{n} {w[1]} queries" for n, w in known)
    unknown = [n for n, w in work if w is None]
    detail = f"per image at most: {parts}" + (f"; {', '.join(unknown)} not counted" if unknown else "")
    return total, detail


def run(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg)  # before the heavy imports
    check_out_dir(cfg.out_dir, create=False)  # a linked output folder: refused before any work
    spec, name = cfg.attack, attack_name()
    import lightning as L
    import torch

    from . import __version__
    from .checkpoint.store import datamodule_for, load_run
    from .tools.cost import _span
    from .report.results import format_table, results_to_json

    audit = cfg.get("weights") is not None  # weights trained elsewhere: batlit.checkpoint.weights builds the run
    if audit:
        from .checkpoint.weights import audit_record, audited_run

        trained = audited_run(cfg)
    else:
        trained = load_run(cfg.ckpt)
    source = Path(str(cfg.weights if audit else cfg.ckpt))
    eps = float(cfg.eps if cfg.eps is not None else trained.config.attack.eps)
    if eps <= 0 and spec.kind != "none":  # a run trained with attack.eps=0 and no eps= given
        raise ConfigError(f"eps: the run at '{source}' has attack.eps={eps}; give eps=<value> > 0 or attack=clean")
    eval_seed = int(cfg.get("eval_seed", 0))
    L.seed_everything(cfg.seed, verbose=False)
    device = resolve_device(cfg.device)
    # the images: chosen by eval_seed alone, whatever seed the run was trained with; n_samples beyond
    # the test split is one line here, before the model moves or any attack runs
    dm = datamodule_for(trained.config, root=cfg.get("data_root"), download=bool(cfg.get("download", False)),
                        test_subset=cfg.n_samples, eval_seed=eval_seed, eval_batch_size=cfg.batch_size, num_workers=0)
    if audit:  # the dataset's own class names
        trained.class_names = list(dm.class_names)
    index = dm.test_index.numpy()
    fingerprint = subset_fingerprint(index, dm.test_y.numpy(), cfg.n_samples, eval_seed)
    precision = str(cfg.get("precision", "fp32"))
    stem = f"eval_{name}" + ("" if precision == "fp32" else f"_{precision}")  # a bf16 run keeps the fp32 files
    out_dir = check_out_dir(Path(cfg.out_dir))
    json_path, csv_path, npz_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv", out_dir / f"{stem}.npz"
    partial_path = out_dir / f".{stem}.partial.npz"
    attack_record = {"name": name, "eps": eps, **OmegaConf.to_container(spec, resolve=True)}
    # everything the predictions depend on: a partial file from any other evaluation is refused
    config = {("weights_sha256" if audit else "ckpt_sha256"): _sha256_file(source),
              **(audit_record(cfg, trained.config) if audit else {}), "attack": attack_record, "seed": int(cfg.seed),
              "batch_size": int(cfg.batch_size), "precision": precision, "device": device.type,
              "fold_batchnorm": bool(cfg.get("fold_batchnorm", True)), "subset": fingerprint,
              "batlit_version": __version__}
    from .models.fold import set_batchnorm_folding

    model = set_batchnorm_folding(trained.model.to(device), bool(cfg.get("fold_batchnorm", True)))
    if precision == "bf16":  # every forward in bf16, logits back in fp32 for the attacks' losses
        from .attacks import AutocastLogits

        model = AutocastLogits(model)
    K = len(trained.class_names)
    components = build_attack(spec, model, eps, K, cfg.seed)
    names = [n for n, _ in components]
    done = read_partial(partial_path, out_dir, config, len(index), len(components))
    loader = dm.test_dataloader()
    n_batches = len(loader)
    if done is not None:
        m = len(done["label"])
        if m != min(done["batches"] * int(cfg.batch_size), len(index)) or not torch.equal(done["label"], dm.test_y[:m]):
            raise ConfigError(f"{partial_path}: its labels are not those of this evaluation's first {m} images; "
                              "delete it to start again")
        print(f"batlit: resuming {name} from {partial_path.name}: {done['batches']} of {n_batches} batches "
              f"({len(done['label'])} of {len(index)} images) done before it stopped")
    left = len(index) - (len(done["label"]) if done else 0)
    if left and components:
        probe = min(len(index), int(cfg.batch_size))
        seconds, detail = estimate(model, dm.test_x[:probe].float().div(255), dm.test_y[:probe], components, left,
                                   device, precision)
        print(f"batlit: estimated at most {_span(seconds)} for {name} on {left} images on {device} ({detail}; "
              "timed on one batch; the later components attack only the images still robust)")

    def save_partial(b: int, so_far: dict[str, Any]) -> None:
        import numpy as np

        atomic_write_bytes(partial_path, _npz_bytes(
            batches=np.array(so_far["batches"]), seconds=np.array(before + time.perf_counter() - start),
            label=so_far["label"].numpy(),
            clean_pred=so_far["clean_pred"].numpy(), adv_pred=so_far["adv_pred"].numpy(),
            config=np.array(json.dumps(config, sort_keys=True))))

    before = done["seconds"] if done else 0.0  # the stopped sessions' time: the JSON's seconds is the whole cost
    start = time.perf_counter()
    out = evaluate(model, loader, components, K, device, progress=cfg.progress_bar,
                   desc=f"{name} eps={eps:.4g}", precision=precision, seed=int(cfg.seed), done=done,
                   on_batch=save_partial)
    seconds = before + time.perf_counter() - start
    summary = results_to_json(out["results"], trained.class_names)
    record = {
        **(audit_record(cfg, trained.config) if audit else {"ckpt": str(source.resolve())}), "attack": attack_record,
        "n_samples": int(sum(summary["count_per_class"])), "eval_seed": fingerprint["eval_seed"],
        "subset": fingerprint, "per_image": npz_path.name, "class_names": trained.class_names,
        "seed": cfg.seed, "device": str(device), "precision": precision,
        "fold_batchnorm": bool(cfg.get("fold_batchnorm", True)), "seconds": round(seconds, 2),
        "resumed_batches": done["batches"] if done else 0, "batlit_version": __version__,
        "components": [{"name": n, "robust_acc": acc, "robust_acc_per_class": per}
                       for n, per, acc in out["robust_after"]],
        **summary,
    }
    atomic_write_bytes(npz_path, _npz_bytes(**per_image_arrays(index, out, names, fingerprint, K)))
    atomic_write_text(json_path, json.dumps(record, indent=2))
    write_csv(csv_path, summary, trained.class_names)
    if partial_path.is_file():  # this evaluation's own: written above, or checked to be this one's (read_partial)
        partial_path.unlink()
    shown = " → ".join(names) or "no attack"
    print(f"\n{name}: {shown}, eps={eps:.4g}; errors in %, {record['n_samples']} test images, {seconds:.1f} s")
    print(format_table(summary, trained.class_names, intervals=True))
    for c in record["components"]:
        print(f"  robust accuracy after {c['name']:<22} {100 * c['robust_acc']:6.2f}%")
    print(f"\nOutputs written to {out_dir}\n  {json_path}\n  {csv_path}\n  {npz_path}")
    return record


@hydra.main(version_base="1.3", config_path="conf/evaluate", config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(run, cfg)


def main() -> None:
    from .checkpoint.weights import require_source_on_command_line

    require_source_on_command_line("ckpt=outputs/train/runs/<run>/checkpoints/last.ckpt attack=pgd20")  # or weights=
    _hydra_main()


if __name__ == "__main__":
    main()
