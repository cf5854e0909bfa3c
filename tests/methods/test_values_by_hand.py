"""Methods' values, each checked against a hand computation, a direct formula or its source.

Every test compares a value with a hand computation, a direct formula or the number its source
states (never a range or a key), in-process on tiny inputs. The areas, in order:

1. the TRADES / FAT-TRADES objective and attack; FAT's τ at its epoch boundaries;
2. FRL: ``init_ckpt`` loads the checkpoint's reported weights, the multipliers reach the checkpoint
   and come back on resume, r1 halves, the Remargin budget reaches the attack;
3. ``method.tau`` reaching BAT's attack, and BAT's steps-to-boundary statistic and its logs;
4. the evaluation attacks' random start and step (training's validation/test, ``batlit.evaluate``);
5. the adversarial confusion matrix's orientation, the class-wise errors of one hand-made batch and
   the worst classes' names;
6. ``scheduler.factors`` / ``count_from``.

Each paper experiment's settings against their sources are in run/test_experiment_sources.py.

The single-line mistakes each test was seen to catch are listed in docs/testing.md.
"""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from batlit.checkpoint.hot_start import load_hot_start
from batlit.methods import BAT, FAT, FATTRADES, FRL, PGDAT, TRADES
from batlit.methods.base import StepDecay
from batlit.metrics import StepsToBoundary
from batlit.report.results import format_table, results_to_json
from conftest import compose_config as _compose
from conftest import linear_model as _linear

ATTACK = {"eps": 0.1, "train": {"steps": 3, "step_size": 0.02},
          "val": {"steps": 4, "step_size": 0.03}, "test": {"steps": 2, "step_size": 0.01}}
OPT = {"name": "sgd", "lr": 0.1}


class Lookup(nn.Module):
    """A fixed logit row per input, keyed by the input's first pixel (rounded to 3 decimals)."""

    def __init__(self, table: dict[float, torch.Tensor], num_classes: int):
        super().__init__()
        self.table, self.num_classes = table, num_classes
        self.w = nn.Parameter(torch.zeros(()))  # something for an optimiser to hold

    def forward(self, x):
        return torch.stack([self.table[round(float(v), 3)] for v in x[:, 0, 0, 0]]) + self.w


class Capture:
    """Stands in for an attack function: records its keyword arguments, then runs the real one."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.real(*args, **kwargs)


def _at_epoch(monkeypatch, method, epoch: int) -> None:
    """Pretend the trainer is at this 0-based epoch."""
    monkeypatch.setattr(type(method), "current_epoch", property(lambda self: epoch))


# ---- 1. TRADES and FAT -------------------------------------------------------------------------

def _trades_by_hand(z, z_adv, y, beta):
    """CE(f(x), y) + β·(1/m) Σ_i Σ_k p_ik log(p_ik / q_ik), p = softmax(z), q = softmax(z_adv)."""
    m = len(y)
    p, q = F.softmax(z, 1), F.softmax(z_adv, 1)
    ce = -torch.log(p[torch.arange(m), y]).mean()
    kl = (p * (p.log() - q.log())).sum() / m
    return ce, kl, ce + beta * kl


@pytest.mark.parametrize("cls,beta", [(TRADES, 1.0), (TRADES, 6.0), (FATTRADES, 2.5)])
@pytest.mark.parametrize("forwards", [{}, {"reuse_clean_logits": True}, {"fused_forward": True}])
def test_trades_objective_is_the_direct_formula(cls, beta, forwards):
    """TRADES' loss (and FAT-for-TRADES', the same objective) on fixed logits, one row per sample,
    against the formula written out; every forward option gives the same value (no BatchNorm)."""
    g = torch.Generator().manual_seed(0)
    z, z_adv = torch.randn(3, 4, generator=g) * 2, torch.randn(3, 4, generator=g) * 2
    table = {**{round(0.1 + 0.01 * i, 3): z[i] for i in range(3)}, **{round(0.5 + 0.01 * i, 3): z_adv[i] for i in range(3)}}
    method = cls(Lookup(table, 4), attack=ATTACK, optimizer=OPT, beta=beta, **forwards)
    x = (0.1 + 0.01 * torch.arange(3.0)).view(3, 1, 1, 1)
    y = torch.tensor([0, 2, 3])
    out = method.objective(x, y, x + 0.4)
    ce, kl, loss = _trades_by_hand(z, z_adv, y, beta)
    torch.testing.assert_close(out["natural"], ce)
    torch.testing.assert_close(out["robust_kl"], kl)
    torch.testing.assert_close(out["loss"], loss)


def test_trades_attack_is_kl_pgd_from_an_unclamped_gaussian_start(monkeypatch):
    """trades_loss's attack: KL, x + 0.001·N(0, I) not clamped, attack.train's ε, step and steps."""
    method = TRADES(_linear(), attack={**ATTACK, "train": {**ATTACK["train"], "eps": 0.05}}, optimizer=OPT,
                    init_std=0.002)
    from batlit.attacks import pgd

    capture = Capture(pgd)
    monkeypatch.setattr("batlit.methods.objectives.pgd", capture)
    method.perturb(torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 3]))
    (kw,) = capture.calls
    assert {k: kw[k] for k in ("loss", "init", "init_std", "project_start", "eps", "step_size", "steps")} == {
        "loss": "kl", "init": "normal", "init_std": 0.002, "project_start": False, "eps": 0.05, "step_size": 0.02,
        "steps": 3}


@pytest.mark.parametrize("cls,expected", [
    # docs/methods.md, FAT: τ by 1-based epoch 0; 1 from 51; 2 from 91 (0-based 50 and 90)
    (FAT, {0: 0, 49: 0, 50: 1, 89: 1, 90: 2, 119: 2}),
    # FAT for TRADES: 0; 1 from 31; 2 from 51; 3 from 71 (0-based 30, 50, 70)
    (FATTRADES, {0: 0, 29: 0, 30: 1, 49: 1, 50: 2, 69: 2, 70: 3, 84: 3}),
])
def test_fat_tau_at_its_epoch_boundaries_reaches_the_attack(monkeypatch, cls, expected):
    """The trainer counts epochs from 0, the schedules from 1: τ at each 0-based epoch either side
    of a boundary, as the method reads it and as boundary_pgd receives it."""
    from batlit.attacks import boundary_pgd

    method = cls(_linear(), attack=ATTACK, optimizer=OPT)
    capture = Capture(boundary_pgd)
    monkeypatch.setattr("batlit.methods.fat.boundary_pgd", capture)
    x, y = torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
    seen = {}
    for epoch in expected:
        _at_epoch(monkeypatch, method, epoch)
        method.perturb(x, y)
        seen[epoch] = (method.tau, capture.calls[-1]["tau"])
    assert seen == {e: (t, t) for e, t in expected.items()}
    kw = capture.calls[-1]
    omega = 0.001 if cls is FAT else 0.0
    assert (kw["eps"], kw["step_size"], kw["steps"], kw["step_noise_std"]) == (0.1, 0.02, 3, omega)


# ---- 2. FRL -------------------------------------------------------------------------------------

def _batlit_checkpoint(tmp_path, extra_state=None, reported="model"):
    """A batlit checkpoint written in-process: a composed run config (synthetic data, small CNN of
    width 4), PGD-AT's state dict and batlit record, as ModelCheckpoint would save them."""
    from batlit.registry import MODELS
    from batlit.train import build_method

    cfg = _compose("data=synthetic", "model=small_cnn", "model.width=4", "method=pgd_at", "trainer=cpu")
    run = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(1)
    model = MODELS[run["model"]["_target_"]](**{k: v for k, v in run["model"].items() if k != "_target_"})
    method = build_method(cfg, model, class_names=[f"class{i}" for i in range(10)], run_config=run)
    from batlit.checkpoint.record import batlit_record

    ckpt = {"state_dict": {**method.state_dict(), **(extra_state or {})}, "hyper_parameters": dict(method.hparams),
            "batlit": batlit_record(method)}
    ckpt["batlit"]["reported_weights"] = reported
    path = tmp_path / "hot.ckpt"
    torch.save(ckpt, path)
    return path, ckpt, run


def test_frl_init_ckpt_loads_the_checkpoints_weights(tmp_path):
    """FRL's model after ``init_ckpt`` is the checkpoint's ``model.*`` state, tensor for tensor
    (a fresh model of the same seed would differ: seed 1 wrote it, FRL's own starts from seed 0)."""
    from batlit.registry import MODELS

    path, ckpt, run = _batlit_checkpoint(tmp_path)
    torch.manual_seed(0)
    model = MODELS[run["model"]["_target_"]](**{k: v for k, v in run["model"].items() if k != "_target_"})
    frl = FRL(model, attack=ATTACK, optimizer=OPT, init_ckpt=str(path))
    hot = load_hot_start(frl, str(path))
    stored = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    loaded = frl.model.state_dict()
    assert loaded.keys() == stored.keys()
    for name, value in stored.items():
        assert torch.equal(loaded[name], value), name
    assert hot.data["_target_"] == "batlit.data.SyntheticDataModule"  # what the split check compares


def test_init_ckpt_loads_the_reported_weights_of_a_cfa_checkpoint(tmp_path):
    """docs/methods.md: FRL loads the reported weights, a CFA run's averaged model."""
    from batlit.registry import MODELS

    _, plain, run = _batlit_checkpoint(tmp_path)
    averaged = {f"averaged_model.{k[len('model.'):]}": v + 1 for k, v in plain["state_dict"].items()
                if k.startswith("model.") and v.is_floating_point()}
    averaged.update({f"averaged_model.{k[len('model.'):]}": v for k, v in plain["state_dict"].items()
                     if k.startswith("model.") and not v.is_floating_point()})
    path, ckpt, _ = _batlit_checkpoint(tmp_path, extra_state=averaged, reported="averaged_model")
    model = MODELS[run["model"]["_target_"]](**{k: v for k, v in run["model"].items() if k != "_target_"})
    frl = FRL(model, attack=ATTACK, optimizer=OPT, init_ckpt=str(path))
    load_hot_start(frl, str(path))
    for name, value in frl.model.state_dict().items():
        assert torch.equal(value, averaged[f"averaged_model.{name}"]), name


class _TinyData(L.LightningDataModule):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(12, 3, 4, 4, generator=g), torch.arange(12) % 3

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x, self.y), batch_size=6)

    val_dataloader = train_dataloader


def _fit(method, ckpt_path=None):
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(method, datamodule=_TinyData(), ckpt_path=ckpt_path)
    return trainer


def test_frl_multipliers_are_saved_in_the_checkpoint_and_restored_on_resume(tmp_path):
    """λ_nat, λ_bndy, λ_eps are in a Lightning checkpoint's state dict with their values, and a
    run resumed from it starts with them (rates 0: the epoch's update leaves them as set)."""
    lam = {"lambda_nat": torch.tensor([0.1, 0.0, 0.2]), "lambda_bndy": torch.tensor([0.0, 0.3, 0.05]),
           "lambda_eps": torch.tensor([0.1, -0.2, 0.3])}

    def frl():
        return FRL(_linear(3), attack=ATTACK, optimizer=OPT, rate1=0.0, rate2=0.0)

    method = frl()
    for name, value in lam.items():
        getattr(method, name).copy_(value)
    trainer = _fit(method)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    for name, value in lam.items():
        torch.testing.assert_close(saved[name], value)
    resumed = frl()
    _fit(resumed, ckpt_path=tmp_path / "last.ckpt")
    for name, value in lam.items():
        torch.testing.assert_close(getattr(resumed, name), value)


def test_frl_rate1_halves_every_halve_every_epochs():
    """r1 = rate1 / 2^(epoch // halve_every) for the 1-based epoch: 0.05 up to epoch 39, 0.025
    from 40, 0.0125 from 80. Gaps small enough that normalise only clamps: λ_nat = max(r1·γ, 0)."""
    std, bndy = torch.tensor([0.40, 0.10, 0.20, 0.10]), torch.tensor([0.50, 0.20, 0.30, 0.20])
    gamma = torch.tensor([0.15, -0.15, -0.05, -0.15])  # e_c − e_total − 0.05 for both, by hand
    for epoch, r1 in ((1, 0.05), (39, 0.05), (40, 0.025), (79, 0.025), (80, 0.0125)):
        method = FRL(_linear(), attack=ATTACK, optimizer=OPT, bound=0.05, rate1=0.05, rate2=0.2, halve_every=40)
        method.update_multipliers(std, bndy, std_total=0.2, bndy_total=0.3, epoch=epoch)
        torch.testing.assert_close(method.lambda_nat, (r1 * gamma).clamp(min=0), msg=f"epoch {epoch}")
        torch.testing.assert_close(method.lambda_bndy, (2 * r1 * gamma).clamp(min=0), msg=f"epoch {epoch}")
        torch.testing.assert_close(method.lambda_eps, 0.2 * gamma)  # r2 does not halve


def test_frl_remargin_budget_reaches_the_attack(monkeypatch):
    """Remargin: sample i is attacked within ε·clamp(exp(2·λ_eps,y_i), 0.98, margin_max), every
    sample with the step max_c ε_c / 4 (hand values for λ_eps = [0.2, 0, −1, 5], ε = 0.1)."""
    from batlit.attacks import pgd

    method = FRL(_linear(), attack=ATTACK, optimizer=OPT, margin_max=3.0)
    method.lambda_eps.copy_(torch.tensor([0.2, 0.0, -1.0, 5.0]))
    capture = Capture(pgd)
    monkeypatch.setattr("batlit.methods.objectives.pgd", capture)
    y = torch.tensor([0, 1, 2, 3, 0])
    method.perturb(torch.rand(5, 3, 4, 4), y)
    (kw,) = capture.calls
    margins = torch.tensor([math.exp(0.4), 1.0, 0.98, 3.0])
    torch.testing.assert_close(kw["eps"].float(), 0.1 * margins[y])
    assert float(kw["step_size"]) == pytest.approx(0.1 * 3.0 / 4)
    assert (kw["loss"], kw["init"], kw["project_start"], kw["steps"]) == ("kl", "normal", False, 3)
    plain = FRL(_linear(), attack=ATTACK, optimizer=OPT, remargin=False)
    plain.lambda_eps.copy_(torch.tensor([0.2, 0.0, -1.0, 5.0]))
    assert plain.attack_budget(y) == (0.1, 0.02)  # FRL-Reweight: attack.train's ε and step


# ---- 3. BAT's attack and its statistics --------------------------------------------------------

def test_method_tau_from_the_config_reaches_boundary_pgd(monkeypatch):
    """``method=bat method.tau=2``, built as batlit.train builds it, passes τ = 2 (and the rest of
    its attack settings) to boundary_pgd."""
    from batlit.attacks import boundary_pgd
    from batlit.train import build_method

    cfg = _compose("method=bat", "method.tau=2", "method.init_std=0.003", "attack=linf_trades")
    method = build_method(cfg, _linear(10))
    capture = Capture(boundary_pgd)
    monkeypatch.setattr("batlit.methods.bat.boundary_pgd", capture)
    method.perturb(torch.rand(3, 3, 4, 4), torch.tensor([0, 1, 2]))
    (kw,) = capture.calls
    assert {k: kw[k] for k in ("tau", "init_std", "loss", "eps", "step_size", "steps")} == {
        "tau": 2, "init_std": 0.003, "loss": "kl", "eps": 0.031, "step_size": 0.007, "steps": 10}


def test_steps_to_boundary_by_hand():
    """Per class, the mean first-misclassified step (K = 5 when never) and the never fraction."""
    metric = StepsToBoundary(4, max_steps=5)
    metric.update(torch.tensor([0, 2, 5]), torch.tensor([0, 0, 0]))
    metric.update(torch.tensor([5, 1, 3]), torch.tensor([1, 1, 2]))  # class 3 never seen
    out = metric.compute()
    nan = float("nan")
    torch.testing.assert_close(out["mean_per_class"], torch.tensor([7 / 3, 3.0, 3.0, nan]), equal_nan=True)
    torch.testing.assert_close(out["never_per_class"], torch.tensor([1 / 3, 1 / 2, 0.0, nan]), equal_nan=True)
    assert float(out["mean"]) == pytest.approx(16 / 6) and float(out["never"]) == pytest.approx(2 / 6)


def test_bat_feeds_and_logs_its_steps_to_boundary(monkeypatch):
    """BAT's epoch logs are StepsToBoundary of the attack's own ``steps`` and labels, per class by name."""
    from batlit.attacks import boundary_pgd

    method = BAT(_linear(3), attack={**ATTACK, "train": {"steps": 4, "step_size": 0.05}}, optimizer=OPT,
                 class_names=["cat", "dog", "ship"])
    capture, outs = Capture(boundary_pgd), []

    def keep(*args, **kwargs):
        outs.append(capture(*args, **kwargs))
        return outs[-1]

    monkeypatch.setattr("batlit.methods.bat.boundary_pgd", keep)
    torch.manual_seed(3)
    x, y = torch.rand(12, 3, 4, 4), torch.arange(12) % 3
    method.perturb(x[:6], y[:6])
    method.perturb(x[6:], y[6:])
    steps = torch.cat([o.steps for o in outs]).double()
    logged = {}
    monkeypatch.setattr(method, "log", lambda name, value, **kw: logged.__setitem__(name, float(value)))
    method.on_train_epoch_end()
    expected = {"train/steps_to_boundary": float(steps.mean()), "train/never_misclassified": float((steps == 4).double().mean())}
    for c, name in enumerate(["cat", "dog", "ship"]):
        expected[f"train/steps_to_boundary/{name}"] = float(steps[y == c].mean())
    assert logged == pytest.approx(expected)
    assert method.steps_to_boundary.update_count == 0  # reset for the next epoch


# ---- 4. the evaluation attacks -----------------------------------------------------------------

class SumModel(nn.Module):
    """logits (s, −s), s = the mean pixel: CE with label 0 rises as every pixel falls, so each PGD
    step moves every pixel by exactly −step (until the ε-ball stops it)."""

    num_classes = 2

    def forward(self, x):
        s = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([s, -s], 1)


def _start_and_step(x_adv, x, eps, total_step):
    """Check x_adv − x = clamp(δ − total_step, −ε, ε) with δ uniform on [−ε, ε]: the largest offset is
    ε − total_step, the fraction stopped at −ε is total_step / (2ε) (δ ≤ −ε + total_step)."""
    d = (x_adv - x).flatten()
    assert float(d.max()) == pytest.approx(eps - total_step, abs=2e-3)
    at_floor = torch.isclose(d, torch.full_like(d, -eps), atol=1e-6).double().mean()
    assert float(at_floor) == pytest.approx(total_step / (2 * eps), abs=0.03)
    assert float(d.min()) == pytest.approx(-eps, abs=1e-6)


@pytest.mark.parametrize("phase,steps,step", [("val", 4, 0.03), ("test", 2, 0.01)])
def test_training_runs_evaluation_attack_start_and_step(phase, steps, step):
    """attack.<phase>'s PGD: uniform start in the ε-ball, its own steps and step (val 4 × 0.03,
    test 2 × 0.01 here), ε = attack.eps; on 3,072 pixels of 0.5 the offsets show all three."""
    method = PGDAT(SumModel(), attack={**ATTACK, "eps": 0.1, "train": {**ATTACK["train"], "eps": 0.05}},
                   optimizer=OPT)
    x, y = torch.full((64, 3, 4, 4), 0.5), torch.zeros(64, dtype=torch.long)
    torch.manual_seed(0)
    _start_and_step(method.evaluation_attack(x, y, phase), x, 0.1, min(steps * step, 0.2))


def test_batlit_evaluate_pgd20_is_uniform_start_and_eps_over_four():
    """conf/evaluate/attack/pgd20.yaml (step null = ε/4) and cw.yaml (30 steps of ε/4, CW loss)."""
    from importlib.resources import files

    from batlit.evaluate import build_attack

    root = files("batlit.conf") / "evaluate" / "attack"
    pgd20 = OmegaConf.load(str(root / "pgd20.yaml"))
    ((name, attack),) = build_attack(pgd20, SumModel(), 0.08, 2, seed=0)
    assert name == "PGD-20 (ce)"
    assert {k: attack.kwargs[k] for k in ("eps", "step_size", "steps", "loss", "init")} == {
        "eps": 0.08, "step_size": 0.02, "steps": 20, "loss": "ce", "init": "uniform"}
    cw = OmegaConf.load(str(root / "cw.yaml"))
    ((_, attack),) = build_attack(cw, SumModel(), 0.08, 2, seed=0)
    assert {k: attack.kwargs[k] for k in ("step_size", "steps", "loss", "init")} == {
        "step_size": 0.02, "steps": 30, "loss": "cw", "init": "uniform"}
    # one step of ε/4 from the uniform start, run for real
    one = OmegaConf.merge(pgd20, {"steps": 1})
    ((_, attack),) = build_attack(one, SumModel(), 0.08, 2, seed=0)
    x = torch.full((64, 3, 4, 4), 0.5)
    torch.manual_seed(0)
    _start_and_step(attack(x, torch.zeros(64, dtype=torch.long)), x, 0.08, 0.02)


def test_pgd_step_is_the_signed_gradient_times_the_step():
    """From no start, K steps of size a move every pixel by exactly −K·a (SumModel, label 0), then ε stops them."""
    from batlit.attacks import pgd

    x, y = torch.full((2, 1, 2, 2), 0.5), torch.zeros(2, dtype=torch.long)
    out = pgd(SumModel(), x, y, eps=0.1, step_size=0.02, steps=3, init="none")
    torch.testing.assert_close(out, x - 0.06)
    out = pgd(SumModel(), x, y, eps=0.1, step_size=0.02, steps=7, init="none")
    torch.testing.assert_close(out, x - 0.1)


# ---- 5. confusion matrix, class-wise errors and worst classes of one hand-made batch ----------

# (label, clean prediction, adversarial prediction)
BATCH = [(0, 0, 0), (0, 0, 2), (0, 1, 1), (0, 0, 0),   # cat:  std 1/4, bndy 1/4, rob 1/2
         (1, 1, 0), (1, 1, 0), (1, 1, 1),              # dog:  std 0,   bndy 2/3, rob 2/3
         (2, 2, 2), (2, 0, 2), (2, 2, 2)]              # ship: std 1/3, bndy 0,   rob 1/3
NAMES = ["cat", "dog", "ship"]


def test_confusion_errors_and_worst_class_names_of_one_batch(monkeypatch):
    """A test step on one batch whose clean and adversarial predictions are set by hand: the
    adversarial confusion matrix has rows = true class, columns = adversarial prediction; the
    class-wise errors, averages and worst classes (by name, per metric) are the hand values."""
    n = len(BATCH)
    table = {}
    for i, (_, clean, adv) in enumerate(BATCH):
        table[round(0.01 * (i + 1), 3)] = F.one_hot(torch.tensor(clean), 3).float() * 5
        table[round(0.5 + 0.01 * (i + 1), 3)] = F.one_hot(torch.tensor(adv), 3).float() * 5
    method = PGDAT(Lookup(table, 3), attack=ATTACK, optimizer=OPT, class_names=NAMES)
    x = (0.01 * torch.arange(1, n + 1.0)).view(n, 1, 1, 1)
    y = torch.tensor([b[0] for b in BATCH])
    monkeypatch.setattr(method, "evaluation_attack", lambda x_, y_, phase: x_ + 0.5)
    method.test_step((x[:6], y[:6]), 0)
    method.test_step((x[6:], y[6:]), 1)
    summary = results_to_json(method._robustness_results("test"), NAMES)
    assert summary["adv_confusion"] == [[2, 1, 1],   # cat → cat, cat, dog, ship
                                        [2, 1, 0],   # dog → cat, cat, dog
                                        [0, 0, 3]]   # ship → ship ×3
    assert summary["count_per_class"] == [4, 3, 3]
    assert summary["std_per_class"] == pytest.approx([1 / 4, 0, 1 / 3])
    assert summary["bndy_per_class"] == pytest.approx([1 / 4, 2 / 3, 0])
    assert summary["rob_per_class"] == pytest.approx([1 / 2, 2 / 3, 1 / 3])
    assert summary["rob_avg"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 3) / 3)
    assert (summary["std_worst"], summary["bndy_worst"], summary["rob_worst"]) == pytest.approx((1 / 3, 2 / 3, 2 / 3))
    assert (summary["std_worst_class"], summary["bndy_worst_class"], summary["rob_worst_class"]) == ("ship", "dog", "dog")
    last = format_table(summary, NAMES).splitlines()[-1].split()
    assert last == ["worst", "33.33", "(ship)", "66.67", "(dog)", "66.67", "(dog)"]


# ---- 6. scheduler.factors ----------------------------------------------------------------------

@pytest.mark.parametrize("count_from,expected", [
    (1, [1.0, 0.5, 0.5, 0.2, 0.2]),   # milestone m: the first 1-based epoch at the new factor
    (0, [1.0, 1.0, 0.5, 0.5, 0.2]),   # one epoch later
])
def test_step_decay_factors_by_hand(count_from, expected):
    """milestones [2, 4] with factors [0.5, 0.2]: the lr factor of finished epochs 0 … 4."""
    decay = StepDecay([4, 2], gamma=0.1, factors=[0.5, 0.2], count_from=count_from)
    assert [decay(e) for e in range(5)] == pytest.approx(expected)
    gamma = StepDecay([2, 4], gamma=0.3, count_from=count_from)
    assert [gamma(e) for e in range(5)] == pytest.approx([{1.0: 1.0, 0.5: 0.3, 0.2: 0.09}[f] for f in expected])
    with pytest.raises(ValueError, match="scheduler.factors"):
        StepDecay([2, 4], factors=[0.5])


def test_configured_factors_reach_the_lr_schedule():
    """scheduler.factors from the config are the lr multipliers, not γ's powers."""
    method = PGDAT(_linear(), attack=ATTACK, optimizer={"name": "sgd", "lr": 0.2},
                   scheduler={"name": "multistep", "milestones": [2, 3], "gamma": 0.1, "factors": [0.3, 0.05]})
    setup = method.configure_optimizers()
    optimizer, schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler.step() before optimizer.step()
        for _ in range(4):
            lrs.append(optimizer.param_groups[0]["lr"])
            schedule.step()
    assert lrs == pytest.approx([0.2, 0.06, 0.01, 0.01])
