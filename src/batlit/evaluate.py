"""Class-wise evaluation of a trained checkpoint: ``python -m batlit.evaluate ckpt=PATH attack=NAME``.

Attacks (config group ``attack`` in ``conf/evaluate/``):

- ``pgd20``: PGD-20 on cross-entropy, step ε/4, uniform start (the paper's evaluation, docs/design.md §3);
- ``cw``: CW∞, PGD on the CW margin loss with κ = 50, 30 steps (the FAT/GAIRAT evaluation code);
- ``autoattack``: the original AutoAttack (Croce & Hein 2020), built from the authors' code
  (``pyautoattack``, as RobustBench runs it; batlit.attacks.autoattack): ``standard`` = APGD-CE,
  APGD-T, FAB-T (100 iterations each, 9 target classes), Square (5000 queries); ``attack.version``
  ``plus`` or ``rand``, or one component (``apgd_ce`` runs the first alone); the same per-class
  results as ``pyautoattack.AutoAttack`` on the same images (tests/test_autoattack_original.py);
- ``autoattack_fast``: torchattacks' AutoAttack, 10 iterations per component — not the original
  AutoAttack and weaker: never the default, never reported as AutoAttack;
- ``clean``: no attack.

Only samples classified correctly so far are attacked by the next component (as AutoAttack does),
so a sample counts as robust when it is right clean and under every component or restart — the
robust error of docs/design.md §4. Writes ``eval_<attack>.json`` and ``eval_<attack>.csv`` beside the
run's ``metrics.json``; ``batlit.report`` picks them up as extra columns. Everything runs in fp32;
``precision=bf16`` runs it under bf16 autocast instead and writes ``eval_<attack>_bf16.*``.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import (ATTACK_LOSSES, ConfigError, exit_on_user_error, register_resolvers, require_on_command_line,
                     resolve_device)

register_resolvers()

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
    if not Path(str(cfg.ckpt)).is_file():
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


def evaluate(model, loader, components: list[tuple[str, Attack]], num_classes: int, device,
             progress: bool = True, desc: str = "", precision: str = "fp32") -> dict[str, Any]:
    """Clean and attacked predictions of every test image; per-class counts after each component.

    ``precision``: ``fp32`` runs everything without autocast, whatever surrounds the call;
    ``bf16`` expects ``model`` (and the attacks' model) wrapped in :class:`batlit.attacks.AutocastLogits`.
    """
    import torch
    from tqdm.auto import tqdm

    from .attacks import attack_precision
    from .metrics import ClassWiseRobustness
    from .models.fold import folded_batchnorm

    metric = ClassWiseRobustness(num_classes).to(device)
    robust_after = torch.zeros(len(components), num_classes, dtype=torch.long, device=device)
    correct_clean = torch.zeros(num_classes, dtype=torch.long, device=device)
    seen = 0
    bar = tqdm(loader, desc=desc, disable=not progress, unit="batch", dynamic_ncols=True)
    # eval mode and fixed weights throughout: BatchNorm folded once for every attack component,
    # torchattacks' included (model.fold_batchnorm, batlit.models.fold)
    with folded_batchnorm(model):
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            with attack_precision("fp32" if precision == "fp32" else "inherit", device.type):
                with torch.no_grad():
                    clean = model(x).argmax(1)
                adv = clean.clone()
                robust = clean == y  # only samples still right are attacked further (AutoAttack's rule)
                correct_clean.scatter_add_(0, y, robust.long())  # no host sync, unlike bincount of y[robust]
                for i, (_, attack) in enumerate(components):
                    idx = robust.nonzero().squeeze(1)
                    if len(idx):
                        x_adv = attack(x[idx], y[idx])
                        with torch.no_grad():
                            pred = model(x_adv).argmax(1)
                        adv[idx] = pred
                        robust[idx] = pred == y[idx]
                    robust_after[i].scatter_add_(0, y, robust.long())
            metric.update(clean, adv, y)
            seen += len(y)
            if progress:
                bar.set_postfix(clean=f"{float(correct_clean.sum()) / seen:.3f}",
                                robust=f"{float(robust_after[-1].sum() if components else correct_clean.sum()) / seen:.3f}")
    results = {k: v.cpu() for k, v in metric.compute().items()}
    total = results["count_per_class"].clamp(min=1).double()
    return {"results": results,
            "robust_after": [(name, (robust_after[i].cpu() / total).tolist(), float(robust_after[i].sum()) / seen)
                             for i, (name, _) in enumerate(components)]}


def write_csv(path: Path, summary: dict[str, Any], class_names: list[str]) -> None:
    """One row per class, then avg and worst: accuracies and errors in %."""
    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.2f}"

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "n", "clean_acc", "robust_acc", "std_error", "bndy_error", "rob_error"])
        for i, name in enumerate(class_names):
            std, bndy, rob = (summary[f"{k}_per_class"][i] for k in ("std", "bndy", "rob"))
            w.writerow([name, summary["count_per_class"][i], pct(None if std is None else 1 - std),
                        pct(None if rob is None else 1 - rob), pct(std), pct(bndy), pct(rob)])
        w.writerow(["avg", sum(summary["count_per_class"]), pct(1 - summary["std_avg"]),
                    pct(1 - summary["rob_avg"]), pct(summary["std_avg"]), pct(summary["bndy_avg"]),
                    pct(summary["rob_avg"])])
        w.writerow(["worst", "", pct(1 - summary["std_worst"]), pct(1 - summary["rob_worst"]),
                    pct(summary["std_worst"]), pct(summary["bndy_worst"]), pct(summary["rob_worst"])])


def run(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg)  # before the heavy imports
    spec, name = cfg.attack, attack_name()
    import lightning as L

    from . import __version__
    from .checkpoint import datamodule_for, load_run
    from .reporting import format_table, results_to_json

    trained = load_run(cfg.ckpt)
    eps = float(cfg.eps if cfg.eps is not None else trained.config.attack.eps)
    if eps <= 0 and spec.kind != "none":  # a run trained with attack.eps=0 and no eps= given
        raise ConfigError(f"eps: the run at '{cfg.ckpt}' has attack.eps={eps}; give eps=<value> > 0 or attack=clean")
    L.seed_everything(cfg.seed, verbose=False)
    device = resolve_device(cfg.device)
    dm = datamodule_for(trained.config, root=cfg.get("data_root"), download=bool(cfg.get("download", False)),
                        test_subset=cfg.n_samples, eval_batch_size=cfg.batch_size, num_workers=0)
    from .models.fold import set_batchnorm_folding

    model = set_batchnorm_folding(trained.model.to(device), bool(cfg.get("fold_batchnorm", True)))
    precision = str(cfg.get("precision", "fp32"))
    if precision == "bf16":  # every forward in bf16, logits back in fp32 for the attacks' losses
        from .attacks import AutocastLogits

        model = AutocastLogits(model)
    K = len(trained.class_names)
    components = build_attack(spec, model, eps, K, cfg.seed)
    start = time.perf_counter()
    out = evaluate(model, dm.test_dataloader(), components, K, device, progress=cfg.progress_bar,
                   desc=f"{name} eps={eps:.4g}", precision=precision)
    seconds = time.perf_counter() - start
    summary = results_to_json(out["results"], trained.class_names)
    record = {
        "ckpt": str(Path(cfg.ckpt).resolve()), "attack": {"name": name, "eps": eps,
                                                         **OmegaConf.to_container(spec, resolve=True)},
        "n_samples": int(sum(summary["count_per_class"])), "class_names": trained.class_names,
        "seed": cfg.seed, "device": str(device), "precision": precision,
        "fold_batchnorm": bool(cfg.get("fold_batchnorm", True)), "seconds": round(seconds, 2), "batlit_version": __version__,
        "components": [{"name": n, "robust_acc": acc, "robust_acc_per_class": per}
                       for n, per, acc in out["robust_after"]],
        **summary,
    }
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"eval_{name}" + ("" if precision == "fp32" else f"_{precision}")  # a bf16 run keeps the fp32 files
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    json_path.write_text(json.dumps(record, indent=2))
    write_csv(csv_path, summary, trained.class_names)
    names = " → ".join(n for n, _ in components) or "no attack"
    print(f"\n{name}: {names}, eps={eps:.4g}; errors in %, {record['n_samples']} test images, {seconds:.1f} s")
    print(format_table(summary, trained.class_names))
    for c in record["components"]:
        print(f"  robust accuracy after {c['name']:<22} {100 * c['robust_acc']:6.2f}%")
    print(f"\nOutputs written to {out_dir}\n  {json_path}\n  {csv_path}")
    return record


@hydra.main(version_base="1.3", config_path="conf/evaluate", config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(run, cfg)


def main() -> None:
    require_on_command_line("ckpt", "ckpt=outputs/train/runs/<run>/checkpoints/last.ckpt attack=pgd20")
    _hydra_main()


if __name__ == "__main__":
    main()
