"""Source- and target-class fairness of a trained model: ``python -m batlit.analyze ckpt=PATH``.

Source-class fairness (the BAT paper's Figure 2, right): per class, the mean number of small
attack steps until a sample is first misclassified, and per step the fraction of each class
still classified correctly. Target-class fairness (Figure 2, left): the confusion matrix of
adversarial predictions, the distribution of adversarial targets and its KL and total-variation
distance to uniform. Writes ``analysis.json``, ``confusion.png``, ``classwise.png`` and
``survival.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, exit_on_user_error, register_resolvers, resolve_device
from .safe_io import atomic_savefig, atomic_write_text, check_out_dir
from .checkpoint.weights import register_resolver

register_resolvers()
register_resolver()  # out_dir's default for weights= (batlit.checkpoint.weights)


def target_distribution(confusion: torch.Tensor) -> torch.Tensor:
    """Normalised column sums of the adversarial confusion matrix over misclassified samples."""
    off = confusion.double().clone()
    off.fill_diagonal_(0)
    total = off.sum()
    return off.sum(0) / total if total > 0 else torch.full((len(off),), 1 / len(off), dtype=torch.double)


def distance_to_uniform(dist: torch.Tensor) -> dict[str, float]:
    """KL(dist ‖ U) and total variation ½ Σ |dist − 1/K|."""
    k = len(dist)
    nz = dist[dist > 0]
    return {"kl_to_uniform": float((nz * (nz * k).log()).sum()),
            "tv_to_uniform": float(0.5 * (dist - 1 / k).abs().sum())}


def analyze(model: torch.nn.Module, loader, num_classes: int, cfg: DictConfig, device: torch.device,
            progress: bool = True) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from .attacks import boundary_pgd, pgd
    from .metrics import ClassWiseRobustness, StepsToBoundary

    src, tgt, K, S = cfg.source, cfg.target, num_classes, int(cfg.source.steps)
    steps_metric = StepsToBoundary(K, S).to(device)
    robustness = ClassWiseRobustness(K).to(device)
    first_mis = torch.zeros(K, S + 1, dtype=torch.long, device=device)  # [class, k*] counts
    confusion = torch.zeros(K * K, dtype=torch.long, device=device)
    for x, y in tqdm(loader, desc="analyze", unit="batch", disable=not progress, dynamic_ncols=True):
        x, y = x.to(device), y.to(device)
        steps = boundary_pgd(model, x, y, eps=src.eps, step_size=src.step_size, steps=S, tau=0,
                             init_std=0.0, loss=src.loss).steps
        steps_metric.update(steps, y)
        first_mis.view(-1).scatter_add_(0, y * (S + 1) + steps, torch.ones_like(y))
        x_adv = pgd(model, x, y, eps=tgt.eps, step_size=tgt.step_size, steps=int(tgt.steps), loss="ce")
        with torch.no_grad():
            clean, adv = model(x).argmax(1), model(x_adv).argmax(1)
        confusion.scatter_add_(0, y * K + adv, torch.ones_like(y))
        robustness.update(clean, adv, y)
    stats = {k: v.cpu() for k, v in steps_metric.compute().items()}
    confusion = confusion.view(K, K).cpu()
    # survival[c][k]: fraction of class c not yet misclassified at evaluation k (the per-step diagonal)
    counts = first_mis.cpu().double()
    survival = 1 - counts.cumsum(1)[:, :S] / counts.sum(1, keepdim=True).clamp(min=1)
    marks = sorted({0, *[min(int(round(S * f)), S - 1) for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75)], S - 1})
    dist = target_distribution(confusion)
    rob = {k: v.cpu() for k, v in robustness.compute().items()}
    return {
        "source": {**OmegaConf.to_container(src), "mean_steps_per_class": stats["mean_per_class"].tolist(),
                   "never_misclassified_per_class": stats["never_per_class"].tolist(),
                   "mean_steps": float(stats["mean"]), "never_misclassified": float(stats["never"]),
                   "survival": {"steps": marks, "per_class": survival[:, marks].tolist()}},
        "target": {**OmegaConf.to_container(tgt), "confusion": confusion.tolist(),
                   "target_distribution": dist.tolist(), **distance_to_uniform(dist)},
        "robustness": {k: (v.tolist() if v.ndim else float(v)) for k, v in rob.items()
                       if not k.endswith("_worst_class")},
    }


def plot(result: dict[str, Any], class_names: list[str], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .report.gallery import as_text

    class_names = [as_text(n) for n in class_names]  # '$\\foo{$' is a name, not mathtext
    K, written = len(class_names), []
    conf = np.asarray(result["target"]["confusion"], dtype=float)
    conf = conf / np.clip(conf.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * K, 1 + 0.45 * K) if K <= 20 else (12, 11))
    im = ax.imshow(conf, cmap="Blues", vmin=0, vmax=1)
    if K <= 20:
        ax.set_xticks(range(K), class_names, rotation=45, ha="right")
        ax.set_yticks(range(K), class_names)
        for i in range(K):
            for j in range(K):
                ax.text(j, i, f"{conf[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if conf[i, j] > 0.5 else "black")
    ax.set_xlabel("adversarial prediction")
    ax.set_ylabel("true class")
    ax.set_title(f"Adversarial confusion (PGD-{result['target']['steps']}), rows normalised")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    written.append(out_dir / "confusion.png")
    atomic_savefig(fig, written[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(max(12, 0.5 * K * 3), 3.8))
    pos = np.arange(K)
    axes[0].bar(pos, result["source"]["mean_steps_per_class"], color="tab:orange")
    axes[0].set_title("Source class: mean steps to first misclassification")
    dist = result["target"]["target_distribution"]
    axes[1].bar(pos, dist, color="tab:purple")
    axes[1].axhline(1 / K, color="black", linestyle="--", linewidth=1, label="uniform")
    axes[1].set_title(f"Target class: adversarial targets (KL {result['target']['kl_to_uniform']:.3f})")
    axes[1].legend()
    std = np.asarray(result["robustness"]["std_per_class"]) * 100
    bndy = np.asarray(result["robustness"]["bndy_per_class"]) * 100
    axes[2].bar(pos, std, label="standard", color="tab:blue")
    axes[2].bar(pos, bndy, bottom=std, label="boundary", color="tab:red")
    axes[2].set_title("Robust error per class (%) = standard + boundary")
    axes[2].legend()
    for ax in axes:
        if K <= 20:
            ax.set_xticks(pos, class_names, rotation=45, ha="right")
    fig.tight_layout()
    written.append(out_dir / "classwise.png")
    atomic_savefig(fig, written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    surv = result["source"]["survival"]
    for name, row in zip(class_names, surv["per_class"]):
        ax.plot(surv["steps"], row, marker="o", markersize=3, label=name)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("attack step")
    ax.set_ylabel("fraction not yet misclassified")
    ax.set_title("Per-class accuracy along the attack")
    if K <= 20:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    written.append(out_dir / "survival.png")
    atomic_savefig(fig, written[-1], dpi=120)
    plt.close(fig)
    return written


def _check_attack(cfg: DictConfig) -> None:
    for part in ("source", "target"):
        for key, ok in (("eps", lambda v: v >= 0), ("step_size", lambda v: v > 0),
                        ("steps", lambda v: isinstance(v, int) and v >= 1)):
            value = cfg[part][key]
            if value is not None and not ok(value):
                raise ConfigError(f"{part}.{key} out of range: {value!r}")


def _check_gallery(cfg: DictConfig) -> None:
    from .report.gallery import PREDICTIONS

    g = cfg.gallery
    if g.baseline_ckpt is not None and not Path(str(g.baseline_ckpt)).is_file():
        raise ConfigError(f"gallery.baseline_ckpt: no checkpoint file at '{g.baseline_ckpt}'")
    for key in ("n_images", "neighbours"):
        if not isinstance(g[key], int) or isinstance(g[key], bool) or g[key] < 1:
            raise ConfigError(f"gallery.{key} must be an integer >= 1, got {g[key]!r}")
    if g.predictions not in PREDICTIONS:
        raise ConfigError(f"gallery.predictions must be one of {', '.join(PREDICTIONS)}, got {g.predictions!r}")
    if g.classes is not None and not OmegaConf.is_list(g.classes):
        raise ConfigError(f"gallery.classes must be a list of class indices or names, got {g.classes!r}")


def _method_name(config: DictConfig) -> str:
    return str(config.method._target_).rsplit(".", 1)[-1]


# data.* settings that decide the training split: the gallery's neighbours come from this run's
SPLIT_KEYS = ("_target_", "root", "classes", "exclude_classes", "val_size", "train_subset", "seed", "image_size")


def load_baseline(cfg: DictConfig, run) -> tuple[Any, list[int] | None]:
    """The gallery's baseline run and its class filter, checked before any attack runs."""
    from .checkpoint.store import load_run
    from .data.base import class_indices

    g = cfg.gallery
    baseline = load_run(g.baseline_ckpt, "gallery.baseline_ckpt")
    if baseline.class_names != run.class_names:
        raise ConfigError(f"gallery.baseline_ckpt: '{g.baseline_ckpt}' was trained on classes "
                          f"{baseline.class_names[:12]}, this run on {run.class_names[:12]}")
    try:
        classes = (class_indices(OmegaConf.to_container(g.classes), run.class_names, "gallery.classes")
                   if g.classes is not None else None)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    differ = [k for k in SPLIT_KEYS if OmegaConf.select(baseline.config.data, k) != OmegaConf.select(run.config.data, k)]
    if differ:
        print(f"batlit: warning: gallery.baseline_ckpt was trained on another training split (data.{', data.'.join(differ)} "
              "differ); the nearest training images come from this run's split", file=sys.stderr)
    return baseline, classes


def write_gallery(cfg: DictConfig, run, baseline, classes: list[int] | None, model: torch.nn.Module, dm,
                  device: torch.device, out_dir: Path) -> list[Path]:
    """Figure 5: test images the baseline run gets wrong and this run gets right (report/gallery.py)."""
    from functools import partial

    from .report import gallery
    from .attacks import pgd

    g, tgt = cfg.gallery, cfg.target
    attack = partial(pgd, eps=tgt.eps, step_size=tgt.step_size, steps=int(tgt.steps), loss="ce")
    record = gallery.build(model, baseline.model.to(device), dm, device, predictions=g.predictions, classes=classes,
                           n_images=g.n_images, neighbours=g.neighbours, attack=attack)
    audit = cfg.get("weights") is not None
    record = {"model_ckpt": str(Path(str(cfg.weights if audit else cfg.ckpt)).resolve()),
              "baseline_ckpt": str(Path(g.baseline_ckpt).resolve()),
              "model": Path(str(cfg.weights)).stem if audit else _method_name(run.config), "baseline": _method_name(baseline.config),
              "attack": OmegaConf.to_container(tgt) if g.predictions == "adversarial" else None,
              "class_names": run.class_names, **record}
    atomic_write_text(out_dir / "gallery.json", json.dumps(record, indent=2))
    png = gallery.plot(record, dm.test_x.cpu(), dm.train_x.cpu(), run.class_names,
                       (record["model"], record["baseline"]), out_dir / "gallery.png")
    print(f"Gallery: {record['n_eligible']} test images right for {record['model']} and wrong for "
          f"{record['baseline']} ({g.predictions}); {len(record['cases'])} drawn with their nearest training images")
    return [out_dir / "gallery.json", png]


def output_folder(cfg: DictConfig, create: bool = False) -> Path:
    """``out_dir``, refused when it is a link, or when it lies in the checkpoint's run folder (the
    default ``<run>/analysis``) and a link on the way leads out of it: a run folder may come from
    elsewhere (docs/reliability.md, Trust)."""
    from .config import run_dir_of

    out_dir = Path(str(cfg.out_dir))
    run_dir = Path(run_dir_of(str(cfg.ckpt))) if cfg.get("weights") is None else None  # weights=: no run folder
    inside = run_dir if run_dir is not None and out_dir.absolute().is_relative_to(run_dir) else None
    return check_out_dir(out_dir, inside=inside, create=create)


def run(cfg: DictConfig) -> dict[str, Any]:
    from .checkpoint.weights import check_source

    check_source(cfg)  # ckpt= or weights= (a file trained elsewhere, batlit.checkpoint.weights)
    audit = cfg.get("weights") is not None
    if not audit and not Path(str(cfg.ckpt)).is_file():  # before the heavy imports
        raise ConfigError(f"ckpt: no checkpoint file at '{cfg.ckpt}'")
    output_folder(cfg)  # before any work: a linked analysis/ folder is refused
    _check_gallery(cfg)
    import lightning as L

    from .checkpoint.store import datamodule_for, load_run

    if cfg.n_samples is not None and (not isinstance(cfg.n_samples, int) or cfg.n_samples < 1):
        raise ConfigError(f"n_samples must be an integer >= 1 or null, got {cfg.n_samples!r}")
    if not isinstance(cfg.get("eval_seed", 0), int) or isinstance(cfg.get("eval_seed", 0), bool) or cfg.get("eval_seed", 0) < 0:
        raise ConfigError(f"eval_seed must be an integer >= 0, got {cfg.get('eval_seed')!r}")
    _check_attack(cfg)
    dm = None
    if audit:  # the model from the file; the class names from the data module, needed by the gallery's check
        from .checkpoint.weights import audited_run

        run = audited_run(cfg)
        L.seed_everything(cfg.seed, verbose=False)
        dm = datamodule_for(run.config, root=cfg.get("data_root"), download=bool(cfg.get("download", False)),
                            test_subset=cfg.n_samples, eval_seed=int(cfg.get("eval_seed", 0)),
                            eval_batch_size=cfg.batch_size, num_workers=0)
        run.class_names = list(dm.class_names)
    else:
        run = load_run(cfg.ckpt)
    for part, fraction in (("source", 20), ("target", 4)):  # null: from the run's threat model
        node = cfg[part]
        if node.eps is None:
            node.eps = float(run.config.attack.eps)
        if node.step_size is None:
            node.step_size = node.eps / fraction
    _check_attack(cfg)
    baseline, gallery_classes = load_baseline(cfg, run) if cfg.gallery.baseline_ckpt is not None else (None, None)
    L.seed_everything(cfg.seed, verbose=False)
    device = resolve_device(cfg.device)
    dm = dm or datamodule_for(run.config, root=cfg.get("data_root"), download=bool(cfg.get("download", False)),
                              test_subset=cfg.n_samples, eval_seed=int(cfg.get("eval_seed", 0)),
                              eval_batch_size=cfg.batch_size, num_workers=0)
    model = run.model.to(device)
    result = analyze(model, dm.test_dataloader(), len(run.class_names), cfg, device,
                     progress=cfg.get("progress_bar", True))
    out_dir = output_folder(cfg, create=True)
    if audit:
        from .checkpoint.weights import audit_record
    source = audit_record(cfg, run.config) if audit else {"ckpt": str(Path(cfg.ckpt).resolve())}
    record = {**source, "class_names": run.class_names,
              "n_samples": len(dm.test_dataloader().dataset), **result}
    atomic_write_text(out_dir / "analysis.json", json.dumps(record, indent=2))
    figures = plot(record, run.class_names, out_dir)
    if baseline is not None:
        figures += write_gallery(cfg, run, baseline, gallery_classes, model, dm, device, out_dir)
    K = len(run.class_names)
    print(f"Source class: mean steps to first misclassification ({cfg.source.steps} x {cfg.source.step_size:.4g})")
    for name, s in zip(run.class_names[:20], record["source"]["mean_steps_per_class"]):
        print(f"  {name:<12} {s:8.1f}")
    print(f"Target class: KL to uniform {record['target']['kl_to_uniform']:.4f}, "
          f"TV {record['target']['tv_to_uniform']:.4f} over {K} classes")
    print(f"Outputs written to {out_dir}")
    for path in [out_dir / "analysis.json", *figures]:
        print(f"  {path}")
    return record


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(run, cfg)


def main() -> None:
    from .checkpoint.weights import require_source_on_command_line

    require_source_on_command_line("ckpt=outputs/train/runs/<run>/checkpoints/last.ckpt")  # or weights= (batlit.checkpoint.weights)
    _hydra_main()


if __name__ == "__main__":
    main()
