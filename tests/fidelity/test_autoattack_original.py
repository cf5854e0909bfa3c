"""``attack=autoattack`` is the original AutoAttack: side by side with the authors' ``pyautoattack``.

The equality test attacks a small adversarially trained CNN (8x8 digits, trained here in about two
seconds) with batlit's path (``build_attack`` + ``evaluate``, the loop ``batlit.evaluate`` runs) and
with ``pyautoattack.AutoAttack(...).run_standard_evaluation`` on the same images, and asserts the
same number of robust images in each class after every component. Both are seeded alike and see the same images
in each ``perturb`` call (one batch holds them all), so the results must be equal, not close.

BatchNorm: ``evaluate`` folds each BatchNorm into its convolution (batlit.models.fold), which
changes logits by float rounding only; the original is run on the same folded model (the same
function, to the bit) so that equality is exact. On the quickstart model the original on the
unfolded model gave the same counts as batlit folded (scripts/aa_compare.py, docs/evaluation.md),
but rounding could flip a borderline image, so the test does not rely on it.

The settings test stubs every attack's ``perturb`` and records the state the caller set (loss,
seed, restarts, iterations, targets, queries, EOT) for each call, in the original's loop and in
batlit's, for every version and single component: the same calls with the same settings on the
same number of images.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from batlit.config import ConfigError
from batlit.evaluate import AUTOATTACK_VERSIONS, build_attack, check_config, evaluate

pytest.importorskip("pyautoattack")

EPS = 0.2  # the digits quickstart's budget (conf/attack/digits.yaml)
N = 64


@pytest.fixture(scope="module")
def digits_model():
    """A width-16 SmallCNN, PGD-trained 3 epochs on 1400 digits; 64 held-out digits (about 25% robust)."""
    from sklearn.datasets import load_digits

    from batlit.attacks import pgd
    from batlit.models import small_cnn

    torch.manual_seed(0)
    d = load_digits()
    x = torch.from_numpy(np.rint(d.images * (255 / 16)).astype(np.uint8)).unsqueeze(1).float() / 255
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:1400 + N]
    model = small_cnn(num_classes=10, in_channels=1, width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        for i in range(0, len(train), 64):
            xb, yb = x[train[i:i + 64]], y[train[i:i + 64]]
            xa = pgd(model, xb, yb, eps=EPS, step_size=0.05, steps=5)
            model.train()
            loss = torch.nn.functional.cross_entropy(model(xa), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), x[test], y[test]


def _spec(version: str, kind: str = "autoattack"):
    return OmegaConf.create({"kind": kind, "version": version})


def _batlit(model, x, y, version: str, seed: int, batch_size: int) -> dict:
    components = build_attack(_spec(version), model, EPS, 10, seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    return evaluate(model, loader, components, 10, torch.device("cpu"), progress=False)


def _original(model, x, y, version: str, seed: int, batch_size: int, monkeypatch) -> dict[str, torch.Tensor]:
    """Robust flags after each attack of the authors' run_standard_evaluation (spied on its state)."""
    from pyautoattack import AutoAttack
    from pyautoattack.state import EvaluationState

    after: dict[str, torch.Tensor] = {}
    add = EvaluationState.add_run_attack

    def spy(state, attack):
        after[attack] = state.robust_flags.clone()
        add(state, attack)

    monkeypatch.setattr(EvaluationState, "add_run_attack", spy)
    single = version not in ("standard", "plus", "rand")
    aa = AutoAttack(model, norm="Linf", eps=EPS, version="standard" if single else version, seed=seed)
    if single:  # as the original's run_standard_evaluation_individual runs one component
        aa.attacks_to_run = [version]
    aa.verbose = False
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    after["final"] = y_adv == y
    monkeypatch.undo()
    return after


def _per_class(flags: torch.Tensor, y: torch.Tensor) -> list[int]:
    return torch.bincount(y[flags], minlength=10).tolist()


def test_autoattack_equals_the_original_per_class_after_every_component(digits_model, monkeypatch):
    from batlit.models.fold import folded_batchnorm

    model, x, y = digits_model
    ours = _batlit(model, x, y, "standard", seed=0, batch_size=N)
    with folded_batchnorm(model):  # the function batlit's evaluate attacks (module docstring)
        theirs = _original(model, x, y, "standard", seed=0, batch_size=N, monkeypatch=monkeypatch)

    counts = ours["results"]["count_per_class"]
    assert counts.tolist() == torch.bincount(y, minlength=10).tolist()
    names = [name for name, _, _ in ours["robust_after"]]
    assert names == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    for (name, per_class, _), attack in zip(ours["robust_after"], ["apgd-ce", "apgd-t", "fab-t", "square"]):
        robust = [round(f * n) for f, n in zip(per_class, counts.tolist())]
        assert robust == _per_class(theirs[attack], y), name
    final = [round((1 - e) * n) for e, n in zip(ours["results"]["rob_per_class"].tolist(), counts.tolist())]
    assert final == _per_class(theirs["final"], y)
    # a model where the test means something: APGD-CE leaves some images, and APGD-T still finds some
    after_ce, after_t = (sum(_per_class(theirs[a], y)) for a in ("apgd-ce", "apgd-t"))
    assert 0 < after_t < after_ce


def test_each_attack_reseeds_from_seed_as_the_original(digits_model):
    model, x, y = digits_model
    [(_, first)], [(_, again)], [(_, other)] = (build_attack(_spec("apgd-ce"), model, EPS, 10, s) for s in (0, 0, 1))
    torch.manual_seed(123)  # the global generator's state must not matter: perturb reseeds
    a = first(x[:16], y[:16])
    torch.manual_seed(456)
    assert torch.equal(a, again(x[:16], y[:16])) and torch.equal(a, first(x[:16], y[:16]))
    assert not torch.equal(a, other(x[:16], y[:16]))  # the random start follows the seed


def _record_perturb_calls(monkeypatch) -> list[tuple]:
    """Stub every pyautoattack attack's perturb: record the caller-set state, return the images unchanged."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_base import FABAttack
    from pyautoattack.square import SquareAttack

    calls: list[tuple] = []

    def recorder(kind, keys):
        def perturb(self, x, y=None, *args, **kwargs):
            assert not torch.is_grad_enabled()  # the original's loop runs under no_grad
            calls.append((kind, tuple((k, getattr(self, k)) for k in keys), len(x)))
            return x.clone()
        return perturb

    apgd = ("loss", "seed", "n_restarts", "n_iter", "eot_iter", "thr_decr", "eps", "norm", "use_largereps")
    monkeypatch.setattr(APGDAttack, "perturb", recorder("apgd", apgd))
    monkeypatch.setattr(APGDAttack_targeted, "perturb", recorder("apgd-t", apgd + ("n_target_classes",)))
    monkeypatch.setattr(FABAttack, "perturb", recorder("fab", ("targeted", "seed", "n_restarts", "n_iter", "eps",
                                                                "norm", "n_target_classes", "alpha_max", "eta",
                                                                "beta")))
    monkeypatch.setattr(SquareAttack, "perturb", recorder("square", ("seed", "n_queries", "p_init", "n_restarts",
                                                                     "eps", "norm", "rescale_schedule", "targeted", "loss")))
    return calls


def _totals(calls: list[tuple]) -> Counter:
    """Images attacked per (attack, settings), whatever the batches."""
    out: Counter = Counter()
    for kind, settings, n in calls:
        out[(kind, settings)] += n
    return out


@pytest.mark.parametrize("version", AUTOATTACK_VERSIONS)
def test_every_version_calls_the_original_attacks_with_the_original_settings(digits_model, monkeypatch, version):
    model, x, y = digits_model
    calls = _record_perturb_calls(monkeypatch)
    _batlit(model, x[:40], y[:40], version, seed=3, batch_size=16)  # three batches: state must not leak between
    ours = _totals(calls)
    calls.clear()
    # the original, on all 40 at once; its perturb stubs stay in place (monkeypatch.undo is not called here)
    from pyautoattack import AutoAttack

    single = version not in ("standard", "plus", "rand")
    aa = AutoAttack(model, norm="Linf", eps=EPS, version="standard" if single else version, seed=3)
    if single:
        aa.attacks_to_run = [version]
    aa.verbose = False
    aa.run_standard_evaluation(x[:40], y[:40], batch_size=40)
    assert ours == _totals(calls) and ours
    kinds = {kind for kind, _ in ours}
    if version == "standard":  # the original's settings, spelt out
        settings = {kind: dict(s) for kind, s in ours}
        assert settings["apgd"]["n_iter"] == settings["apgd-t"]["n_iter"] == settings["fab"]["n_iter"] == 100
        assert settings["apgd-t"]["n_target_classes"] == settings["fab"]["n_target_classes"] == 9
        assert settings["square"]["n_queries"] == 5000 and settings["square"]["p_init"] == 0.8
        assert kinds == {"apgd", "apgd-t", "fab", "square"}
    if version == "rand":
        assert {dict(s)["eot_iter"] for _, s in ours} == {20}


def test_class_counts_and_versions_the_original_cannot_run_are_one_line(tmp_path, digits_model):
    model = digits_model[0]
    with pytest.raises(ConfigError, match="need at least 10 classes; this model has 5"):
        build_attack(_spec("standard"), model, EPS, 5, 0)
    with pytest.raises(ConfigError, match="APGD-DLR needs at least 3 classes"):
        build_attack(_spec("apgd-dlr"), model, EPS, 2, 0)
    assert [n for n, _ in build_attack(_spec("apgd-ce"), model, EPS, 5, 0)] == ["APGD-CE"]
    from batlit.attacks import autoattack as library

    assert AUTOATTACK_VERSIONS == library.AUTOATTACK_VERSIONS + library.AUTOATTACK_COMPONENTS
    (tmp_path / "x.ckpt").write_bytes(b"")
    cfg = OmegaConf.create({"ckpt": str(tmp_path / "x.ckpt"), "device": "cpu", "n_samples": None, "batch_size": 8,
                            "eps": None, "attack": {"kind": "autoattack", "version": "stanard"}})
    with pytest.raises(ConfigError, match="attack.version must be one of standard, plus, rand, .*got 'stanard'"):
        check_config(cfg)
    check_config(OmegaConf.merge(cfg, {"attack": {"version": "plus"}}))
    with pytest.raises(ConfigError, match="got 'fast'"):
        check_config(OmegaConf.merge(cfg, {"attack": {"kind": "autoattack_fast", "version": "fast"}}))


def test_the_torchattacks_variant_is_only_autoattack_fast(digits_model):
    """``attack=autoattack_fast`` keeps torchattacks' 10-iteration AutoAttack under its own name."""
    from pathlib import Path

    import torchattacks

    from batlit.attacks.autoattack import OriginalComponent

    model = digits_model[0]
    fast = build_attack(_spec("standard", "autoattack_fast"), model, EPS, 10, 0)
    assert [n for n, _ in fast] == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert isinstance(fast[0][1], torchattacks.APGD) and fast[0][1].steps == 10
    assert all(isinstance(a, OriginalComponent) for _, a in build_attack(_spec("standard"), model, EPS, 10, 0))
    conf = Path(__file__).resolve().parents[2] / "conf" / "evaluate" / "attack"
    assert OmegaConf.load(conf / "autoattack.yaml").kind == "autoattack"
    assert OmegaConf.load(conf / "apgd_ce.yaml").kind == "autoattack"
    assert "NOT the original AutoAttack" in (conf / "autoattack_fast.yaml").read_text()


def test_cost_estimate_counts_every_original_component():
    """evaluate's up-front estimate reads each component's work from the authors' settings: APGD-CE 100
    steps, APGD-T and FAB-T 9 targets × 100, Square 5000 queries (standard); rand's 20 EOT draws."""
    from torch import nn

    from batlit.attacks.autoattack import autoattack_components
    from batlit.evaluate import _work

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    assert [_work(c) for c in autoattack_components(model, 0.1, "standard")] == [(100, 0), (900, 0), (900, 0), (0, 5000)]
    assert [_work(c) for c in autoattack_components(model, 0.1, "rand")] == [(2000, 0), (2000, 0)]
    assert _work(autoattack_components(model, 0.1, "plus")[2]) == (500, 0)  # FAB, untargeted, 5 restarts
