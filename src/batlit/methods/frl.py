"""Fair Robust Learning (Xu et al., ICML 2021), as in hannxu123/fair_robust (``frl_train``,
``cost_sensitive``, ``normalize_lambda``): fine-tune a robust model under per-class fairness
constraints, with Lagrange multipliers updated every epoch from the validation split.

Before each epoch, PGD on the validation split gives per-class clean errors e_nat,c and boundary
errors e_bndy,c; with the fairness bound τ, γ_c = e_c − e_total − τ and

    λ_nat  ← normalise(λ_nat + r1·γ_nat),    λ_bndy ← normalise(λ_bndy + 2·r1·γ_bndy),
    λ_eps  ← λ_eps + r2·γ_bndy              (normalise: clamp at 0, rescale to sum ≤ lim)

Reweight: class weights w_c = 1/K + λ_c − (1/K)·Σ_j λ_j for the clean and/or the boundary term
(a multiplier that weights no term is not updated and stays 0, as in the authors' scripts).
Remargin: class-wise ε_c = ε·clamp(exp(2·λ_eps,c), 0.98, margin_max), attack step max(ε_c)/4.
Loss = Σ w_nat·CE(f(x), y) / Σ w_nat + β·Σ w_bndy·KL(f(x) ‖ f(x_adv)) / Σ w_bndy, from three train-mode
forwards in ``train_model``'s order (clean for CE, adversarial, clean as the KL target).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attacks import eval_mode, pgd
from ..metrics import ClassWiseRobustness
from .base import AdversarialMethod
from .trades import trades_logits

REWEIGHT_TERMS = ("natural", "boundary")
# data.* keys that must agree for two runs to draw their splits from the same images in the same order
SAME_IMAGES_KEYS = ("_target_", "classes", "exclude_classes")


def normalize_lambda(lam: Tensor, lim: float) -> Tensor:
    """Clamp at 0; rescale onto {Σ λ ≤ lim} when the sum exceeds it (``normalize_lambda``)."""
    lam = lam.clamp(min=0)
    total = lam.sum()
    return lam * (lim / total) if total > lim else lam


def class_weights(lam: Tensor) -> Tensor:
    """w_c = 1/K + λ_c − (1/K)·Σ_j λ_j (``cost_sensitive``)."""
    k = len(lam)
    return 1 / k + lam - lam.sum() / k


def class_margins(lam_eps: Tensor, margin_max: float) -> Tensor:
    """ε_c / ε = clamp(exp(2·λ_eps,c), 0.98, margin_max) (``cost_sensitive``)."""
    return torch.exp(2 * lam_eps).clamp(0.98, margin_max)


def reweight_terms(reweight: Any) -> tuple[str, ...]:
    """``method.reweight`` as the loss terms it class-weights: ``true`` both, ``false`` none, or a
    list of ``natural`` / ``boundary`` (FRL-Remargin's ``[natural]``, as the authors' frlrm.py)."""
    if isinstance(reweight, bool):
        return REWEIGHT_TERMS if reweight else ()
    terms = [reweight] if isinstance(reweight, str) else list(reweight or ())
    if any(t not in REWEIGHT_TERMS for t in terms):
        raise ValueError(f"method.reweight must be true, false or a list of {', '.join(REWEIGHT_TERMS)}, "
                         f"got {reweight!r}")
    return tuple(t for t in REWEIGHT_TERMS if t in terms)


def split_indices(labels: Tensor, val_size: float | int, seed: int,
                  train_subset: int | None = None) -> tuple[Tensor, Tensor]:
    """(validation, training) indices into the full training set whose labels are ``labels``, drawn
    as :meth:`batlit.data.base.ImageDataModule.setup` draws them for these data settings (the
    stratified validation split, then the training subset; tests/test_fidelity.py checks the two agree)."""
    from ..data.base import ImageDataModule, _generator, stratified_split

    kind, amount = ImageDataModule._parse_val_size(val_size)
    n = labels.numel()
    n_val = math.ceil(amount * n) if kind == "fraction" else int(amount)
    val_idx, train_idx = torch.zeros(0, dtype=torch.long), torch.arange(n)
    if n_val > 0:
        val_idx, train_idx = stratified_split(labels, n_val, _generator(seed, 1))
    if train_subset is not None and train_subset < train_idx.numel():
        keep, _ = stratified_split(labels[train_idx], int(train_subset), _generator(seed, 2))
        train_idx = train_idx[keep]
    return val_idx, train_idx


class FRL(AdversarialMethod):
    """FRL-Reweight (``reweight``), -Remargin (``remargin``) or both.

    Args:
        reweight: the loss terms weighted by class: ``true`` (both: Reweight, Reweight+Remargin),
            ``[natural]`` (the authors' FRL-Remargin, frlrm.py with utils_frl1.py: λ_nat moves and
            weights CE, the boundary term stays uniform) or ``false``.
        remargin: class-wise ε from λ_eps.
        bound: the fairness bound τ on clean and boundary error gaps (paper: 0.05, 0.07).
        beta: weight of the boundary (KL) term (docs/design.md §6: 1.5).
        rate1, rate2: step sizes of the multiplier updates; rate1 halves every ``halve_every`` epochs.
        lim: the multipliers' simplex bound (0.5).
        margin_max: upper clamp of the ε factor.
        init_ckpt: a batlit checkpoint of the same architecture and class count to fine-tune.
        allow_val_overlap: fine-tune a checkpoint that trained on some of this run's validation
            images, with a warning (:meth:`check_init_split`; refused by default).
        fused_forward, reuse_clean_logits: the train-mode forwards (:func:`~batlit.methods.trades.trades_logits`;
            by default the authors' three).
    """

    needs_val_split = True  # checked by batlit.train before training starts

    def __init__(self, *args, reweight: bool | str | list[str] = True, remargin: bool = True, bound: float = 0.05,
                 beta: float = 1.5, rate1: float = 0.05, rate2: float = 0.2, halve_every: int = 40,
                 lim: float = 0.5, margin_max: float = 3.0, init_std: float = 0.001,
                 init_ckpt: str | None = None, allow_val_overlap: bool = False, fused_forward: bool = False,
                 reuse_clean_logits: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reweight, self.remargin = reweight_terms(reweight), bool(remargin)
        if not (self.reweight or self.remargin):
            raise ValueError("method: FRL needs reweight and/or remargin")
        for key, value in (("bound", bound), ("rate1", rate1), ("rate2", rate2), ("lim", lim)):
            if not value >= 0:
                raise ValueError(f"method.{key} must be >= 0, got {value}")
        self.allow_val_overlap = bool(allow_val_overlap)
        self.fused_forward, self.reuse_clean_logits = bool(fused_forward), bool(reuse_clean_logits)
        self._init_data: dict[str, Any] | None = None  # the hot start's data settings (setup checks them)
        self._init_path: str | None = None
        self.bound, self.beta, self.rate1, self.rate2 = float(bound), float(beta), float(rate1), float(rate2)
        self.halve_every, self.lim, self.margin_max = int(halve_every), float(lim), float(margin_max)
        self.init_std = float(init_std)
        k = self.num_classes
        # Multipliers are buffers: saved in checkpoints and, being computed from the whole
        # validation split on every process with the same seed, identical on every DDP rank.
        self.register_buffer("lambda_nat", torch.zeros(k))
        self.register_buffer("lambda_bndy", torch.zeros(k))
        self.register_buffer("lambda_eps", torch.zeros(k))
        if init_ckpt:
            self._load_init(init_ckpt)

    def _load_init(self, path: str) -> None:
        from omegaconf import OmegaConf

        from ..checkpoint import read_batlit_checkpoint

        if not Path(path).is_file():
            raise ValueError(f"method.init_ckpt: no checkpoint file at '{path}'")
        ckpt, stored = read_batlit_checkpoint(path, "method.init_ckpt")  # its stored config names no code
        state = {k[len("model."):]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("model.")}
        own = self.model.state_dict()
        if state.keys() != own.keys() or any(state[k].shape != own[k].shape for k in own):
            raise ValueError(f"method.init_ckpt: '{path}' holds another architecture or class count "
                             f"than model={type(self.model).__name__} with {self.num_classes} classes")
        self.model.load_state_dict(state)
        data = stored.get("data")
        self._init_data = OmegaConf.to_container(data, resolve=True) if data is not None else None
        self._init_path = str(path)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self._init_data is not None:
            self.check_init_split(self.trainer.datamodule)

    def check_init_split(self, datamodule: Any) -> None:
        """One line when this run's validation images were training images of ``init_ckpt``.

        The multipliers move on per-class errors measured on the validation split; images the hot
        start trained on are easier for it, which biases those errors and their gaps. Both splits are
        recomputed from the two runs' data settings (:func:`split_indices`) on this run's labels: an
        error, or with ``allow_val_overlap`` a warning. A hot start on other data
        (``SAME_IMAGES_KEYS`` differ) cannot be checked and says so. A dataset whose images change
        with ``data.seed`` (``data=synthetic``) counts a seed change as overlap.
        """
        from ..config import ConfigError
        from ..data.base import ImageDataModule

        run = (self.hparams.get("run_config") or {}).get("data") or {}
        hot, path = self._init_data or {}, self._init_path
        if not isinstance(datamodule, ImageDataModule) or not run:
            return  # built outside batlit.train: no run settings to compare with
        differ = [k for k in SAME_IMAGES_KEYS if run.get(k) != hot.get(k)]
        if differ:
            self._warn(f"method.init_ckpt: '{path}' was trained on other data (data.{', data.'.join(differ)} differ): "
                       "whether this run's validation images were among its training images is not checked")
            return
        labels = datamodule._select_classes(datamodule._load()).train_y
        val_idx, _ = split_indices(labels, datamodule.val_size, datamodule.seed)
        _, hot_train = split_indices(labels, hot.get("val_size") or 0, int(hot.get("seed", 0)), hot.get("train_subset"))
        seen = int(torch.isin(val_idx, hot_train).sum())
        if not seen:
            return
        message = (f"method.init_ckpt: {seen} of this run's {len(val_idx)} validation images were training images "
                   f"of '{path}' (it had data.val_size={hot.get('val_size')}, data.seed={hot.get('seed')}; "
                   f"this run data.val_size={datamodule.val_size}, data.seed={datamodule.seed}), which biases "
                   "FRL's per-class error gaps: train the hot start with this split held out (the same data.seed "
                   "and data.val_size, e.g. experiment=pgd_at_hot_start_cifar10) or set method.allow_val_overlap=true")
        if not self.allow_val_overlap:
            raise ConfigError(message)
        self._warn(message)

    def _warn(self, message: str) -> None:
        trainer = self._trainer
        if trainer is None or trainer.is_global_zero:  # once under DDP
            print(f"batlit: warning: {message}", file=sys.stderr)

    # ---- the multipliers ---------------------------------------------------------------------
    def update_multipliers(self, std_per_class: Tensor, bndy_per_class: Tensor, std_total: float,
                           bndy_total: float, epoch: int) -> None:
        """One FRL update from validation errors, for the 1-based ``epoch`` about to be trained."""
        r1 = self.rate1 / 2 ** (epoch // self.halve_every)
        gamma_nat = std_per_class - std_total - self.bound
        gamma_bndy = bndy_per_class - bndy_total - self.bound
        # a multiplier that weights nothing stays 0: frlrm.py comments out λ_bndy's update, frlrw.py λ_eps's
        if "natural" in self.reweight:
            self.lambda_nat.copy_(normalize_lambda(self.lambda_nat + r1 * gamma_nat, self.lim))
        if "boundary" in self.reweight:
            self.lambda_bndy.copy_(normalize_lambda(self.lambda_bndy + 2 * r1 * gamma_bndy, self.lim))
        if self.remargin:
            self.lambda_eps.add_(self.rate2 * gamma_bndy)

    def validation_errors(self) -> tuple[Tensor, Tensor, float, float]:
        """Per-class and overall clean / boundary errors on the whole validation split (attack.test)."""
        datamodule = self.trainer.datamodule
        loader = datamodule.val_dataloader()
        if not loader:
            raise ValueError("method: FRL updates its multipliers on a validation split; set data.val_size > 0")
        # every process evaluates the whole split with the same seed: no sync needed, same result
        metric = ClassWiseRobustness(self.num_classes, sync_on_compute=False).to(self.device)
        spec = self.hparams.attack["test"]
        generator = torch.Generator(device=self.device).manual_seed(int(self.current_epoch))
        with eval_mode(self.model):
            for x, y in loader:
                x, y = x.to(self.device), y.to(self.device)
                x_adv = pgd(self.model, x, y, eps=self.eps, step_size=float(spec["step_size"]),
                            steps=int(spec["steps"]), loss="ce", init="uniform", generator=generator)
                with torch.no_grad():
                    metric.update(self.model(x), self.model(x_adv), y)
        r = metric.compute()
        n = r["count_per_class"].float()  # a class absent from the split weighs nothing in the overall errors
        std, bndy = r["std_per_class"].nan_to_num(0.0), r["bndy_per_class"].nan_to_num(0.0)
        return std, bndy, float((std * n).sum() / n.sum()), float((bndy * n).sum() / n.sum())

    def on_train_epoch_start(self) -> None:
        self.update_multipliers(*self.validation_errors(), epoch=self.current_epoch + 1)
        for name, values in (("lambda_nat", self.lambda_nat), ("lambda_bndy", self.lambda_bndy),
                             ("lambda_eps", self.lambda_eps)):
            for cls, value in zip(self.class_names, values):
                self.log(f"frl/{name}/{cls}", value, sync_dist=False)

    # ---- the method --------------------------------------------------------------------------
    def sample_weights(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(w_nat, w_bndy) per sample; a term that is not reweighted gets the uniform 1/K."""
        uniform = torch.full((len(y),), 1 / self.num_classes, device=y.device)
        w_nat = class_weights(self.lambda_nat)[y] if "natural" in self.reweight else uniform
        w_bndy = class_weights(self.lambda_bndy)[y] if "boundary" in self.reweight else uniform
        return w_nat, w_bndy

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if not self.remargin:
            return pgd(self.model, x, y, loss="kl", init="normal", init_std=self.init_std, **self.train_attack)
        margins = class_margins(self.lambda_eps, self.margin_max)
        eps = self.train_attack["eps"] * margins[y]
        return pgd(self.model, x, y, eps=eps, step_size=self.train_attack["eps"] * margins.max().double() / 4,
                   steps=self.train_attack["steps"], loss="kl", init="normal", init_std=self.init_std,
                   precision=self.train_attack.get("precision", "auto"))

    def objective(self, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
        w_nat, w_bndy = self.sample_weights(y)
        logits, logits_adv, target = trades_logits(self.model, x, x_adv, fused=self.fused_forward,
                                                   reuse_clean=self.reuse_clean_logits)
        natural = F.cross_entropy(logits, y, reduction="none")
        boundary = F.kl_div(F.log_softmax(logits_adv, 1), F.log_softmax(target, 1), reduction="none",
                            log_target=True).sum(1)
        natural_w = (w_nat * natural).sum() / w_nat.sum()
        boundary_w = (w_bndy * boundary).sum() / w_bndy.sum()
        return {"loss": natural_w + self.beta * boundary_w, "natural": natural_w, "boundary_kl": boundary_w}
