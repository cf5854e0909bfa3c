"""The class-wise mechanism (methods/classwise.py) and CFA, WAT, DAFA, FAAL on it.

The authors' functions written again from their facts are in fidelity/test_classwise_authors.py; here: the
update rules on hand-computed inputs, per-sample budgets in the attacks, the mechanism's sources,
its state in checkpoints (exact resume after SIGKILL), logs, metrics.json and report, and the
one-line refusals of bad input before any data is read.
"""

from __future__ import annotations

import csv
import math
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from batlit.attacks import boundary_pgd, pgd
from batlit.config import ConfigError
from batlit.methods import CFA, DAFA, FAAL, WAT, cfa_betas, cfa_margins, dafa_weights, faal_weights, wat_weights
from batlit.methods.classwise import validation_seed
from batlit.methods.faal import kl_uniform_to, probability_margins

from conftest import ROOT, TINY, run_cli, train

ATTACK = {"eps": 0.1, "train": {"steps": 2, "step_size": 0.05}, "val": {"steps": 2, "step_size": 0.05},
          "test": {"steps": 2, "step_size": 0.05}}
OPT = {"name": "sgd", "lr": 0.1}


def _model(k: int = 4) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, k))
    model.num_classes = k
    return model


# ---- the update rules, by hand ------------------------------------------------------------------
def test_dafa_weights_by_hand():
    p = torch.tensor([[0.5, 0.3, 0.2],
                      [0.1, 0.8, 0.1],
                      [0.2, 0.2, 0.6]])
    # class 0 is the hardest (0.5): it gains λ·P[0,j]·P[j,j] from both others
    w0 = 1 + 2 * (0.3 * 0.8 + 0.2 * 0.6)
    # class 1 the easiest (0.8): it gives λ·P[j,1]·P[1,1] to both
    w1 = 1 - 2 * (0.3 * 0.8 + 0.2 * 0.8)
    # class 2: gains from 1 (0.6 < 0.8), gives to 0 (0.6 >= 0.5)
    w2 = 1 + 2 * (0.2 * 0.8) - 2 * (0.2 * 0.6)
    assert dafa_weights(p, 2.0).tolist() == pytest.approx([w0, w1, w2])
    assert float(dafa_weights(p, 2.0).sum()) == pytest.approx(3.0)  # the corrected rule moves weight, zero-sum
    tie = torch.tensor([[0.6, 0.4], [0.4, 0.6]])
    assert dafa_weights(tie, 1.0).tolist() == pytest.approx([1 - 0.24, 1 - 0.24])  # ties: both subtract
    assert dafa_weights(p, 0.0).tolist() == [1.0, 1.0, 1.0]


def test_wat_weights_by_hand():
    c = torch.tensor([0.0, math.log(3) / 0.5, 0.0])  # K = 2 classes and the average
    w = wat_weights(c, eta=0.5)
    assert w.tolist() == pytest.approx([2 * 1 / 5, 2 * 3 / 5, 2 * 1 / 5])
    assert float(w.sum()) == pytest.approx(2.0)  # the K + 1 weights sum to K
    assert wat_weights(torch.zeros(11), 0.1).tolist() == pytest.approx([10 / 11] * 11)


def test_cfa_rules_by_hand():
    t = torch.tensor([0.0, 0.25, 1.0])
    assert cfa_margins(t, 0.5).tolist() == [0.5, 0.75, 1.5]     # no clipping: [0.5, 1.5]·ε
    assert cfa_betas(t, 6.0, 0.5).tolist() == [3.0, 4.5, 9.0]


def test_faal_weights_two_classes_in_closed_form():
    # K = 2, c = (1, 0): KL(U‖p) = r gives p1·p2 = e^{-2r}/4, p1 = (1 + sqrt(1 − e^{-2r}))/2
    for r in (0.05, 0.5, 2.0):
        p = faal_weights(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]), r)
        expected = (1 + math.sqrt(1 - math.exp(-2 * r))) / 2
        assert p.tolist() == pytest.approx([expected, 1 - expected], abs=1e-6)
    # the class count multiplies the margin, and an absent class's margin does not count
    p = faal_weights(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([0.2, 0.3, 5.0]), 0.5)
    assert p[0] > p[1] and float(kl_uniform_to(p.double())) == pytest.approx(0.5, abs=1e-6)
    assert faal_weights(torch.ones(4), torch.full((4,), 0.3), 0.5).tolist() == pytest.approx([0.25] * 4)
    assert faal_weights(torch.ones(3), torch.tensor([0.1, 0.2, 0.3]), 0.0).tolist() == pytest.approx([1 / 3] * 3)


def test_probability_margins_by_hand():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    assert probability_margins(logits, torch.tensor([0, 1])).tolist() == pytest.approx([0.2 - 0.7, 0.6 - 0.3])


# ---- per-sample budgets in the attacks ----------------------------------------------------------
def test_pgd_and_boundary_pgd_take_per_sample_eps_and_step():
    model = _model().eval()
    x, y = torch.rand(6, 3, 4, 4) * 0.5 + 0.25, torch.tensor([0, 1, 2, 3, 0, 1])
    eps = torch.tensor([0.0, 0.01, 0.02, 0.05, 0.1, 0.2])
    step = torch.tensor([0.01, 0.01, 0.01, 0.02, 0.03, 0.05])
    x_adv = pgd(model, x, y, eps=eps, step_size=step, steps=1, init="none")
    moved = (x_adv - x).abs().flatten(1).amax(1)
    assert moved.tolist() == pytest.approx(torch.minimum(eps, step).tolist(), abs=1e-6)  # one signed step each
    for compact in (True, False):  # compaction drops samples: their budgets must go with them
        out = boundary_pgd(model, x, y, eps=eps, step_size=step, steps=4, init="none", compact=compact, tau=0)
        bound = (out.first_adv - x).abs().flatten(1).amax(1)
        assert torch.all(bound <= eps + 1e-6)
        if compact:
            first = out
    assert torch.equal(first.first_adv, out.first_adv) and torch.equal(first.steps, out.steps)
    with pytest.raises(ValueError, match="one value per sample"):
        pgd(model, x, y, eps=eps[:3], step_size=0.01, steps=1)


# ---- the mechanism's sources --------------------------------------------------------------------
def _trainer(epoch: int = 0, world_size: int = 1, loader=None):
    return SimpleNamespace(current_epoch=epoch, world_size=world_size, datamodule=SimpleNamespace(
        val_dataloader=lambda: loader))


@pytest.fixture
def at_epoch(monkeypatch):
    """Give a method a stand-in trainer: its 0-based current epoch, world size, rank and val split."""
    from lightning.pytorch import LightningModule

    state = {"trainer": _trainer(), "rank": 0}
    monkeypatch.setattr(LightningModule, "trainer", property(lambda self: state["trainer"]))
    monkeypatch.setattr(LightningModule, "current_epoch", property(lambda self: state["trainer"].current_epoch))
    monkeypatch.setattr(LightningModule, "global_rank", property(lambda self: state["rank"]))

    def set_(epoch: int = 0, world_size: int = 1, loader=None, rank: int = 0):
        state["trainer"], state["rank"] = _trainer(epoch, world_size, loader), rank
    return set_


def test_training_examples_give_per_class_accuracy_and_confusion_then_reset(at_epoch):
    method = DAFA(_model(3), attack=ATTACK, optimizer=OPT, warmup_epoch=1)
    y = torch.tensor([0, 0, 1, 2])
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]]))
    method.record_training_examples(y[:2], logits[:2])
    method.record_training_examples(y[2:], logits[2:])
    stats = method.epoch_statistics()
    assert stats["seen"].tolist() == [2, 1, 1]
    assert stats["accuracy"].tolist() == pytest.approx([0.5, 1.0, 0.0])
    expected = torch.tensor([[0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]])
    assert torch.allclose(stats["confusion"], expected, atol=1e-6)
    assert method.epoch_seen.sum() == 0 and method.epoch_probs.sum() == 0  # reset for the next epoch
    at_epoch(epoch=0)
    method.record_training_examples(y, logits)
    method.after_epoch(1)  # the warm-up epoch: W from P, W·ε in the attack from epoch 2
    assert method.weight.tolist() == pytest.approx(dafa_weights(expected, 1.0).tolist())
    at_epoch(epoch=1)
    eps, step = method.attack_budget(y)
    assert eps.tolist() == pytest.approx((0.1 * method.weight[y]).tolist())
    assert step.tolist() == pytest.approx((0.05 * method.weight[y]).tolist())


def test_validation_sums_split_over_ranks_add_up_to_one_process(at_epoch, monkeypatch):
    """Each rank attacks every world_size-th batch with a per-batch seed: the ranks' sums add up to
    one process's (the all-reduce, here summed by hand), for any number of ranks."""
    method = WAT(_model(), attack=ATTACK, optimizer=OPT)
    torch.manual_seed(1)
    loader = [(torch.rand(5, 3, 4, 4), torch.randint(0, 4, (5,))) for _ in range(5)]
    at_epoch(epoch=2, loader=loader)
    whole = method.validation_losses(3)
    parts = []
    import batlit.methods.classwise as classwise

    for rank in (0, 1):
        at_epoch(epoch=2, world_size=2, loader=loader, rank=rank)
        captured = {}
        monkeypatch.setattr(classwise, "all_reduce_sum", lambda t: captured.setdefault("t", t))
        method.validation_sums(lambda x, y, g: {"loss": torch.ones(len(y))}, ("loss",), 3)
        parts.append(captured["t"])
    counts = sum(p[0] for p in parts)
    assert counts.tolist() == torch.bincount(torch.cat([y for _, y in loader]), minlength=4).float().tolist()
    assert parts[0][0].sum() == 15 and parts[1][0].sum() == 10  # batches 0, 2, 4 and 1, 3
    assert validation_seed(3, 1) != validation_seed(3, 2) != validation_seed(4, 1)
    assert whole.shape == (5,) and float(whole[-1]) == pytest.approx(float(whole[:4] @ counts / counts.sum()))


def test_wat_update_and_loss(at_epoch):
    method = WAT(_model(), attack=ATTACK, optimizer=OPT, eta=0.5)
    torch.manual_seed(2)
    loader = [(torch.rand(8, 3, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))]
    at_epoch(epoch=0, loader=loader)
    losses = method.validation_losses(1)  # seeded by (epoch, batch): the update sees the same values
    assert float(losses[-1]) == pytest.approx(float(losses[:4].mean()))  # balanced split: the class mean
    method.after_epoch(1)
    assert torch.equal(method.cumulative_loss, losses)
    assert method.weight.tolist() == pytest.approx(wat_weights(losses, 0.5).tolist())
    x, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 3])
    x_adv = (x + 0.05).clamp(0, 1)
    out = method.objective(x, y, x_adv)
    terms = method.base_terms(x, y, x_adv)
    w = method.weight[y] + method.weight[-1]
    expected = (w * (terms["ce"] + 6.0 * terms["kl"])).mean()
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_cfa_margins_act_after_begin_and_trades_loss_is_scaled(at_epoch):
    method = CFA(_model(), attack=ATTACK, optimizer=OPT, begin=2, fawa=False, ccr=True)
    y = torch.tensor([0, 0, 1, 2, 3, 3])
    right = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 3, 3]), 4).float() * 5
    for epoch in (1, 2):
        at_epoch(epoch=epoch - 1)
        assert method.attack_budget(y) == (0.1, 0.05)  # ε for all until begin epochs have trained
        method.record_training_examples(y, right)
        method.after_epoch(epoch)
    t = torch.tensor([0.5, 1.0, 0.0, 1.0])
    assert method.train_accuracy.tolist() == t.tolist()
    at_epoch(epoch=2)
    eps, step = method.attack_budget(y)
    assert eps.tolist() == pytest.approx((0.1 * (0.5 + t[y])).tolist()) and step == 0.05  # the step is not scaled
    assert method.class_beta.tolist() == pytest.approx(((0.5 + t) * 6).tolist())
    x = torch.rand(6, 3, 4, 4)
    x_adv = (x + 0.05).clamp(0, 1)
    terms = method.base_terms(x, y, x_adv)
    b = method.class_beta[y] / (1 + method.class_beta[y])
    expected = ((1 - b) * terms["ce"] + b * terms["kl"]).mean()
    assert float(method.objective(x, y, x_adv)["loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_faal_loss_weights_each_sample_by_its_class(at_epoch):
    import copy

    import torch.nn.functional as F

    method = FAAL(_model(), attack=ATTACK, optimizer=OPT, r=0.5)
    x, y = torch.rand(6, 3, 4, 4), torch.tensor([0, 0, 1, 2, 3, 3])
    x_adv = (x + 0.05).clamp(0, 1)
    twin = copy.deepcopy(method.model).train()
    logits_adv = twin(x_adv)  # the train-mode forward the margins come from
    m = probability_margins(logits_adv, y)
    counts = torch.bincount(y, minlength=4).float()
    p = faal_weights(counts, torch.zeros(4).index_add_(0, y, m) / counts.clamp(min=1), 0.5)
    expected = 4 * (p[y] * F.cross_entropy(logits_adv, y, reduction="none")).mean()
    out = method.objective(x, y, x_adv)
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(kl_uniform_to(p.double())) == pytest.approx(0.5, abs=1e-5) and p[1] != p[0]
    method.objective(x, y, x_adv)
    method.after_epoch(1)  # the logged weight: the epoch's mean of K·p
    assert method.weight.tolist() == pytest.approx((4 * p).tolist(), rel=1e-4) and method.weight_batches == 0


# ---- in a run: logs, metrics.json, report, checkpoints -------------------------------------------
def test_wat_run_logs_its_state_per_class_and_report_shows_it(tmp_path):
    record = train(tmp_path / "wat", "method=wat", "data.val_size=40", "epochs=2")
    state = record["class_state"]
    assert set(state) == {"cumulative_loss", "weight"} and len(state["weight"]) == len(record["class_names"]) + 1
    assert sum(state["weight"]) == pytest.approx(len(record["class_names"]), rel=1e-5)
    ckpt = torch.load(tmp_path / "wat" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["weight"].tolist() == pytest.approx(state["weight"])
    rows = list(csv.DictReader((tmp_path / "wat" / "csv" / "metrics.csv").open()))
    logged = [r for r in rows if r.get("classwise/weight/avg")]
    assert len(logged) == 2 and float(logged[-1]["classwise/weight/avg"]) == pytest.approx(state["weight"][-1])
    from batlit.report.tables import report

    out = report([tmp_path / "wat"], out=tmp_path / "report", figures=False)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Class-wise state" in text and "| wat | weight |" in text
    assert f"{state['weight'][0]:.3g}" in text.split("| wat | weight |")[1].splitlines()[0]
    assert out["records"]


def test_cfa_reports_its_averaged_model(tmp_path):
    """FAWA with threshold 0 takes every epoch: validation, test, load_run and evaluate measure the
    averaged weights, saved beside the trained ones."""
    from batlit.checkpoint.store import load_run

    record = train(tmp_path / "cfa", "method=cfa", "method.begin=1", "method.threshold=0", "data.val_size=40",
                   "epochs=2")
    ckpt = torch.load(tmp_path / "cfa" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["batlit"]["reported_weights"] == "averaged_model" and bool(ckpt["state_dict"]["fawa_started"])
    averaged = {k[len("averaged_model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("averaged_model.")}
    trained = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert averaged.keys() == trained.keys()
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged if averaged[k].is_floating_point())
    run = load_run(tmp_path / "cfa" / "checkpoints" / "last.ckpt")
    assert all(torch.equal(v, averaged[k]) for k, v in run.model.state_dict().items())
    assert record["class_state"]["eps_scale"] == pytest.approx([0.5 + t for t in record["class_state"]["train_accuracy"]])


@pytest.mark.slow  # a real SIGKILL; test_reliability's SIGKILL test keeps resume exactness in `make test`
def test_class_state_is_exact_after_sigkill_and_resume(tmp_path):
    """CFA's training-example sums, margins and averaged model, and WAT's cumulative losses, are
    buffers: a run killed after its first epoch and resumed ends with the uninterrupted state."""
    from test_reliability import _kill_after_first_checkpoint

    run = ["experiment=quickstart", "epochs=3", "method=cfa", "method.begin=1", "method.threshold=0",
           "attack.val.steps=2", "attack.test.steps=2", "trainer.enable_progress_bar=false",
           "scheduler.milestones=[2]", "trainer.check_val_every_n_epoch=2"]
    whole = train(tmp_path / "whole", *run, tiny=False)
    assert _kill_after_first_checkpoint(tmp_path / "killed", *run) == 0
    resumed = train(tmp_path / "killed", *run, "resume=true", tiny=False)
    assert resumed["class_state"] == whole["class_state"]
    for key in ("rob_per_class", "std_per_class"):
        assert resumed[key] == whole[key], key
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
            for d in ("whole", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- bad input: one line, before any data is read -------------------------------------------------
BAD = [
    (["method=dafa", "method.lam=-1"], "method.lam must be >= 0"),
    (["method=wat", "method.eta=-0.1"], "method.eta must be >= 0"),
    (["method=faal", "method.init_ckpt=x.ckpt", "method.r=-1"], "method.r must be >= 0"),
    (["method=dafa", "epochs=5"], "method.warmup_epoch=70 is beyond the run's epochs=5"),
    (["method=faal", "method.init_ckpt=null"], "method.init_ckpt is required: FAAL fine-tunes"),
    (["method=faal"], "method.init_ckpt is required"),
    (["method=wat", "method.base=pgd_at"], "method.base must be one of trades for WAT"),
    (["method=dafa", "method.base=fat", "method.warmup_epoch=1"], "method.base must be one of pgd_at, trades"),
    (["method=cfa", "method.threshold=1.2"], "method.threshold must be in [0, 1]"),
    (["method=cfa", "method.threshold=-0.1"], "method.threshold must be in [0, 1]"),
    (["method=cfa", "method.base=pgd_at", "method.ccr=true"], "method.ccr"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_one_line_before_any_data(overrides, message, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from batlit.config import register_resolvers, validate
    from batlit.train import check_method_options

    register_resolvers()
    if "method.init_ckpt=x.ckpt" in overrides:
        (tmp_path / "x.ckpt").write_bytes(b"")
        overrides = [o.replace("x.ckpt", str(tmp_path / "x.ckpt")) for o in overrides]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["data=cifar10", f"data.root={tmp_path / 'absent'}", *overrides])
    with pytest.raises(ConfigError) as err:  # the order of batlit.train.run: validate, then the method's options
        validate(cfg, check_paths=False)
        check_method_options(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_input_from_the_command_line_exits_2_with_one_line(tmp_path):
    proc = run_cli("batlit.train", *TINY, "method=dafa", "method.warmup_epoch=3", "epochs=2",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "batlit: config error: method.warmup_epoch=3 is beyond the run's epochs=2: the class weights would "
        "never be computed (set method.warmup_epoch <= epochs)"]
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow  # two DDP processes per method: `make test-all` runs it
@pytest.mark.parametrize("method", [["method=cfa", "method.begin=1", "method.threshold=0"],
                                    ["method=faal", "method.base=trades"]], ids=["cfa", "faal"])
def test_class_state_is_the_same_on_every_ddp_rank(method, tmp_path, hot_start):
    """CFA's sums of training examples and FAWA's validation check, FAAL's per-batch margins: each is
    reduced over the ranks, so every rank holds the same per-class state and averaged weights."""
    run_dir, dumps = tmp_path / "ddp", tmp_path / "dumps"
    path = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)
    if method[0] == "method=faal":
        method = [*method, f"method.init_ckpt={hot_start / 'checkpoints' / 'last.ckpt'}"]
    proc = run_cli("batlit.train", *TINY, *method, "epochs=2", "data.val_size=40", "trainer=ddp",
                   "trainer.accelerator=cpu", "trainer.devices=2", "+callbacks.dump._target_=rank_state.DumpMethodState",
                   f"+callbacks.dump.out_dir={dumps}", f"hydra.run.dir={run_dir}", env={"PYTHONPATH": path},
                   timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0, rank1 = (torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2 and rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(torch.as_tensor(rank0[key]), torch.as_tensor(rank1[key])), key
    moved = "eps_scale" if "method=cfa" in method else "weight"
    assert not torch.allclose(rank0[moved], torch.ones_like(rank0[moved]))  # the state really moved
    if "method=cfa" in method:
        assert any(k.startswith("averaged_model.") for k in rank0)
