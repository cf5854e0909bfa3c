"""The original AutoAttack (Croce & Hein, ICML 2020), one component at a time, from the authors' code.

The components are the authors' own classes from ``pyautoattack`` (fra31/auto-attack on PyPI, the
package RobustBench evaluates with), configured by the authors' ``AutoAttack`` object itself:
:func:`autoattack_components` builds ``pyautoattack.AutoAttack(model, norm="Linf", eps=ε,
version=..., seed=...)`` and returns each attack it would run as a callable ``(images, labels) ->
adversarial images``. Each call is exactly the branch of ``AutoAttack.run_standard_evaluation`` for
that attack: the same settings (``_set_version``), the same state set before ``perturb`` (the loss,
FAB's targeting and restarts) and the same seed (each ``perturb`` reseeds torch from ``seed``), so a
caller that hands a component the same images the original would, in the same order, gets the same
adversarial images (tests/fidelity/test_autoattack_original.py).

For L∞ the versions run (``pyautoattack/autoattack.py``, ``AutoAttack._set_version``):

- ``standard``: APGD-CE (1 restart) → APGD-T (9 target classes, 1 restart each) → FAB-T (9 target
  classes) → Square (5000 queries, p_init 0.8); 100 iterations for APGD, APGD-T and FAB-T; APGD's
  ρ = 0.75.
- ``plus``: APGD-CE and APGD-DLR (5 restarts each) → FAB (5 restarts) → Square → APGD-T → FAB-T.
- ``rand`` (randomised defences): APGD-CE and APGD-DLR, 1 restart, each gradient averaged over 20
  EOT draws.

A single component (``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab-t``, ``square``) runs as the
``standard`` version sets it up (``apgd-dlr``, not part of ``standard``, as its APGD: 1 restart).

Two things the wrapper adds, neither changing a result: each call runs under ``torch.no_grad`` as
the original's loop does (the attacks enable gradients where they need them), and with the model's
parameters set not to require gradients, so FAB's ``backward`` computes the input's gradient only
(the original also accumulates gradients into the weights, which nothing reads).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

__all__ = ["AUTOATTACK_VERSIONS", "AUTOATTACK_COMPONENTS", "DISPLAY_NAMES", "OriginalComponent",
           "autoattack_components", "check_autoattack_classes"]

AUTOATTACK_VERSIONS = ("standard", "plus", "rand")
AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")  # runnable alone
DISPLAY_NAMES = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab": "FAB",
                 "fab-t": "FAB-T", "square": "Square"}


@contextmanager
def _input_gradients_only(model: nn.Module) -> Iterator[None]:
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class OriginalComponent:
    """One attack of a ``pyautoattack.AutoAttack`` as ``(images, labels) -> adversarial images``.

    ``__call__`` is the body of ``run_standard_evaluation``'s loop for ``name`` (the authors' code):
    it sets what that loop sets before ``perturb`` and calls the same ``perturb``. FAB is shared by
    ``fab`` and ``fab-t`` and the original's ``fab-t`` branch sets its restarts to 1 for good; the
    original runs every batch of ``fab`` before the first of ``fab-t``, so ``fab`` always gets the
    version's restarts, which this call therefore sets each time (batlit runs the components batch
    by batch).
    """

    def __init__(self, adversary, name: str, fab_restarts: int) -> None:
        if name not in DISPLAY_NAMES:
            raise ValueError(f"AutoAttack has no component {name!r}; one of {', '.join(DISPLAY_NAMES)}")
        self.adversary, self.name, self.fab_restarts = adversary, name, fab_restarts
        self.display_name = DISPLAY_NAMES[name]

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        aa, name = self.adversary, self.name
        x, y = images.clone(), labels.clone()  # as the original: x_orig[idcs].clone()
        with torch.no_grad(), _input_gradients_only(aa.model):
            if name in ("apgd-ce", "apgd-dlr"):
                aa.apgd.loss = "ce" if name == "apgd-ce" else "dlr"
                aa.apgd.seed = aa.get_seed()
                return aa.apgd.perturb(x, y)
            if name in ("fab", "fab-t"):
                aa.fab.targeted = name == "fab-t"
                aa.fab.n_restarts = 1 if name == "fab-t" else self.fab_restarts
                aa.fab.seed = aa.get_seed()
                return aa.fab.perturb(x, y)
            if name == "square":
                aa.square.seed = aa.get_seed()
                return aa.square.perturb(x, y)
            aa.apgd_targeted.seed = aa.get_seed()  # apgd-t
            return aa.apgd_targeted.perturb(x, y)

    @property
    def work(self) -> tuple[int, int]:
        """(gradient steps, forward-only queries) one image costs this component at most, from the
        authors' settings: iterations × restarts × target classes × EOT draws; Square's queries."""
        aa, name = self.adversary, self.name
        if name == "square":
            return 0, int(aa.square.n_queries) * int(aa.square.n_restarts)
        if name in ("fab", "fab-t"):
            targets = int(aa.fab.n_target_classes) if name == "fab-t" else 1
            return int(aa.fab.n_iter) * (1 if name == "fab-t" else self.fab_restarts) * targets, 0
        attack = aa.apgd_targeted if name == "apgd-t" else aa.apgd
        targets = int(attack.n_target_classes) if name == "apgd-t" else 1
        return int(attack.n_iter) * int(attack.n_restarts) * targets * int(getattr(attack, "eot_iter", 1) or 1), 0

    def __repr__(self) -> str:
        return f"OriginalComponent({self.name!r}, eps={self.adversary.epsilon}, seed={self.adversary.seed})"


def check_autoattack_classes(version: str, num_classes: int) -> str | None:
    """Why ``version`` cannot run on ``num_classes`` classes as the original, or None.

    The original's APGD-T and FAB-T attack the 2nd to 10th most likely classes (``n_target_classes
    = 9``, ``output.sort()[1][:, -target_class]``): with fewer than 10 classes its index runs out of
    range and the original fails (after ``checks.check_n_classes`` warns). APGD-DLR's loss reads the
    third largest logit, so it needs 3 classes.
    """
    names = _attacks_of(version)
    if any(n in ("apgd-t", "fab-t") for n in names) and num_classes < 10:
        return (f"attack.version={version}: the original AutoAttack's APGD-T and FAB-T attack 9 target classes "
                f"and need at least 10 classes; this model has {num_classes} (use version=apgd-ce or "
                "attack=autoattack_fast)")
    if "apgd-dlr" in names and num_classes < 3:
        return f"attack.version={version}: APGD-DLR needs at least 3 classes; this model has {num_classes}"
    return None


def _attacks_of(version: str) -> list[str]:
    if version in AUTOATTACK_COMPONENTS:
        return [version]
    return {"standard": ["apgd-ce", "apgd-t", "fab-t", "square"],
            "plus": ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"],
            "rand": ["apgd-ce", "apgd-dlr"]}[version]


def autoattack_components(model: nn.Module, eps: float, version: str = "standard",
                          seed: int = 0) -> list[OriginalComponent]:
    """The attacks the original L∞ AutoAttack ``version`` runs, in its order, each seeded with ``seed``.

    ``version``: ``standard``, ``plus`` or ``rand``, or one component (``apgd-ce``, ``apgd-dlr``,
    ``apgd-t``, ``fab-t``, ``square``) as ``standard`` sets it up. The attacks follow the device of
    the images they are given (``device=None``).
    """
    if version not in AUTOATTACK_VERSIONS + AUTOATTACK_COMPONENTS:
        raise ValueError(f"AutoAttack version must be one of {', '.join(AUTOATTACK_VERSIONS + AUTOATTACK_COMPONENTS)}, "
                         f"got {version!r}")
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, norm="Linf", eps=float(eps), seed=seed, device=None,
                    version=version if version in AUTOATTACK_VERSIONS else "standard")
    names = list(aa.attacks_to_run) if version in AUTOATTACK_VERSIONS else [version]  # the authors' order
    fab_restarts = int(aa.fab.n_restarts)  # the version's setting, before any fab-t call sets it to 1
    return [OriginalComponent(aa, name, fab_restarts) for name in names]
