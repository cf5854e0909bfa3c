"""The BAT paper's Figure 5 ("bad case study"): test images that a baseline (PGD-AT) gets wrong and
this model (BAT) gets right, each shown beside its nearest training images of the class the
baseline predicted, to see whether the baseline's mistake follows a spurious resemblance (the
paper's example: a bird on a blue sky with two wings, taken for a plane).

``python -m batlit.analyze ckpt=BAT_RUN/checkpoints/last.ckpt gallery.baseline_ckpt=PGD_AT_CKPT``
writes ``gallery.png`` and ``gallery.json`` beside the analysis: per case its ``analysed_index``
(the position among the analysed test images, the seeded ``n_samples`` subset), label, both
predictions and the indices (into this run's training split) and distances of the nearest
training images. Both models see the same images, so compare runs trained on the same data
(``analyze`` warns otherwise). Nearness is the L2 distance
between images in [0, 1] pixel space, which is model-agnostic: what a person would call "quite
similar", not what either network thinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

PREDICTIONS = ("clean", "adversarial")


@torch.no_grad()
def _argmax(model: nn.Module, x: Tensor) -> Tensor:
    return model(x).argmax(1)


def predicted_labels(model: nn.Module, loader, device: torch.device, attack=None) -> Tensor:
    """Predicted labels over ``loader`` (in its order), on clean images or, with ``attack`` (a callable
    ``(model, x, y) -> x_adv``), on that model's own adversarial examples."""
    out = []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if attack is not None:
            x = attack(model, x, y)
        out.append(_argmax(model, x))
    return torch.cat(out).cpu()


def eligible(labels: Tensor, right_pred: Tensor, wrong_pred: Tensor, classes: Sequence[int] | None) -> Tensor:
    """Mask of samples that ``right_pred`` classifies correctly and ``wrong_pred`` does not, among
    ``classes`` (all when None)."""
    case = (right_pred == labels) & (wrong_pred != labels)
    if classes is not None:
        case &= torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))
    return case


def pick_cases(case: Tensor, labels: Tensor, n_images: int) -> Tensor:
    """Up to ``n_images`` indices where ``case`` holds, taken round-robin over the true classes in
    index order so every class with a case appears, lowest sample index first; returned ordered by
    (class, index)."""
    per_class = [torch.nonzero(case & (labels == c)).flatten().tolist() for c in range(int(labels.max()) + 1)]
    picked: list[int] = []
    for rank in range(max((len(p) for p in per_class), default=0)):
        picked += [p[rank] for p in per_class if rank < len(p)]
        if len(picked) >= n_images:
            break
    picked = sorted(picked[:n_images], key=lambda i: (int(labels[i]), i))  # rows grouped by class
    return torch.as_tensor(picked, dtype=torch.long)


def nearest_training(images: Tensor, classes: Tensor, train_x: Tensor, train_y: Tensor, k: int,
                     chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """For each image (float in [0, 1]), the ``k`` training images of ``classes[i]`` nearest in L2
    (``train_x`` uint8 (N, C, H, W)): their indices into ``train_x`` and their distances."""
    idx_out = torch.full((len(images), k), -1, dtype=torch.long)
    dist_out = torch.full((len(images), k), float("inf"))
    flat = images.flatten(1).float()
    for i, c in enumerate(classes.tolist()):
        pool = torch.nonzero(train_y == c).flatten()
        if pool.numel() == 0:
            continue
        d = torch.cat([torch.cdist(flat[i:i + 1], train_x[pool[s:s + chunk]].flatten(1).float().div(255))[0]
                       for s in range(0, pool.numel(), chunk)])
        n = min(k, pool.numel())
        best = torch.topk(d, n, largest=False)
        idx_out[i, :n], dist_out[i, :n] = pool[best.indices], best.values
    return idx_out, dist_out


def build(model: nn.Module, baseline: nn.Module, datamodule, device: torch.device, *, predictions: str,
          classes: Sequence[int] | None, n_images: int, neighbours: int, attack=None) -> dict[str, Any]:
    """The gallery's cases: test images ``baseline`` gets wrong and ``model`` gets right (clean, or
    each under its own ``attack``), with the nearest training images of the baseline's prediction."""
    if predictions not in PREDICTIONS:
        raise ValueError(f"gallery.predictions must be one of {', '.join(PREDICTIONS)}; got {predictions!r}")
    loader = datamodule.test_dataloader()
    attack = attack if predictions == "adversarial" else None
    right = predicted_labels(model, loader, device, attack)
    wrong = predicted_labels(baseline, loader, device, attack)
    labels = datamodule.test_y.cpu().long()
    case = eligible(labels, right, wrong, classes)
    cases = pick_cases(case, labels, n_images)
    images = datamodule.test_x.cpu()[cases].float().div(255)
    near_idx, near_dist = nearest_training(images, wrong[cases], datamodule.train_x.cpu(),
                                           datamodule.train_y.cpu(), neighbours)
    return {
        "predictions": predictions,
        "n_eligible": int(case.sum()),
        "n_eligible_per_class": torch.bincount(labels[case], minlength=datamodule.num_classes).tolist(),
        "cases": [
            {"analysed_index": int(t), "label": int(labels[t]), "model_pred": int(right[t]),
             "baseline_pred": int(wrong[t]), "neighbours": near_idx[i].tolist(),
             "neighbour_distances": [round(float(v), 4) for v in near_dist[i]]}
            for i, t in enumerate(cases.tolist())
        ],
    }


def as_text(name: str) -> str:
    """A class or run name as matplotlib shows it literally: a ``$`` would start mathtext, which a
    name such as ``$\\foo{$`` makes fail."""
    return str(name).replace("$", r"\$")


def plot(record: dict[str, Any], test_x: Tensor, train_x: Tensor, class_names: list[str],
         names: tuple[str, str], path: Path) -> Path:
    """One row per case: the test image, then its nearest training images of the baseline's class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..safe_io import atomic_savefig

    class_names = [as_text(n) for n in class_names]
    names = tuple(as_text(n) for n in names)

    cases = record["cases"]
    k = max((len(c["neighbours"]) for c in cases), default=0)
    rows, cols = max(len(cases), 1), 1 + k
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows), squeeze=False)

    def show(ax, img: Tensor, title: str) -> None:
        img = img.permute(1, 2, 0)
        gray = img.shape[-1] == 1
        ax.imshow(img.squeeze(-1) if gray else img, cmap="gray" if gray else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])

    model_name, baseline_name = names
    for r, case in enumerate(cases):
        show(axes[r][0], test_x[case["analysed_index"]],
             f"test image {case['analysed_index']}: {class_names[case['label']]}\n"
             f"{baseline_name}: {class_names[case['baseline_pred']]}")
        for j in range(cols - 1):
            ax = axes[r][1 + j]
            if j < len(case["neighbours"]) and case["neighbours"][j] >= 0:
                show(ax, train_x[case["neighbours"][j]],
                     f"train {class_names[case['baseline_pred']]}\nL2 {case['neighbour_distances'][j]:.2f}")
            else:
                ax.axis("off")
    if not cases:
        axes[0][0].axis("off")
        axes[0][0].text(0.5, 0.5, "no test image is wrong for the baseline and right for the model",
                        ha="center", va="center", fontsize=8)
    fig.suptitle(f"Right for {model_name}, wrong for {baseline_name} ({record['predictions']}): "
                 "nearest training images of the class the baseline predicted", fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return path
