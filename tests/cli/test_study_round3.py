"""Study round 3 (docs/results_round3.md): its configs, the kept weights and per-image files, the FAWA threshold's
rule, the AutoAttack subset's arithmetic, the tables and the claims, each on hand-made inputs; and
(slow) scripts/study_round3.sh's dry run on a few hundred real images."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import round3_aa_cost  # noqa: E402
import round3_claims  # noqa: E402
import round3_fawa  # noqa: E402
import round3_tables  # noqa: E402

KEEP = [sys.executable, str(ROOT / "scripts" / "keep_results.py")]
# each round-3 experiment against the command line study round 2 trained the same method with
ROUND2_COMMANDS = {
    "pgd_at": ["method=pgd_at"], "trades6": ["method=trades", "method.beta=6"], "bat": ["method=bat"],
    "wat": ["method=wat"], "cfa": ["method=cfa", "method.begin=1"], "dafa": ["method=dafa", "method.warmup_epoch=13"],
    "faal_trades": ["method=faal", "method.base=trades", "epochs=2", "optimizer.lr=0.005", "scheduler.milestones=[2]"],
    "frl_trades": ["method=frl_rwrm", "method.bound=0.05", "epochs=4", "scheduler=constant", "optimizer.lr=0.005",
                   "method.halve_every=2"],
}


def _compose(*overrides: str) -> dict:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="batlit.conf", version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=False)
    cfg.pop("experiment", None)
    return cfg


@pytest.mark.parametrize("name", sorted(ROUND2_COMMANDS))
def test_round3_experiments_are_round2s_large_scale_runs(name):
    init = ["method.init_ckpt=x"] if name in ("faal_trades", "frl_trades") else []
    assert _compose(f"experiment=study3_{name}", "seed=2", *init) == _compose(
        "experiment=study_cifar10_cpu_large", "seed=2", *ROUND2_COMMANDS[name], *init)


def test_the_cfa_variant_changes_the_fawa_threshold_alone_to_the_rule_on_round2s_runs():
    cfa, variant = _compose("experiment=study3_cfa"), _compose("experiment=study3_cfa_fawa")
    assert variant["method"].pop("threshold") == 0.04 and cfa["method"].pop("threshold") is None
    assert variant == cfa
    kept = sorted((ROOT / "results/round2/large/cfa").glob("seed*"))
    assert round3_fawa.threshold([round3_fawa.fawa_record(r) for r in kept]) == 0.04


def _csv(run: Path, values: list[float]) -> Path:
    (run / "csv").mkdir(parents=True)
    rows = ["epoch,cfa/fawa_started,cfa/fawa_worst_val_robust_acc,val/rob_worst"]
    for e, v in enumerate(values):
        rows += [f"{e},,,0.9", f"{e},0.0,{v},"]
    (run / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run


def test_fawa_record_and_threshold_by_hand(tmp_path):
    a = round3_fawa.fawa_record(_csv(tmp_path / "seed0", [0.0, 0.07, 0.03, 0.05]))
    assert a == {"run": "seed0", "started": False, "max": 0.07, "max_epoch": 2, "last": 0.05, "epochs": 4}
    b = round3_fawa.fawa_record(_csv(tmp_path / "seed1", [0.02, 0.09, 0.09, 0.06]))
    assert (b["max"], b["max_epoch"], b["last"]) == (0.09, 2, 0.06)  # the first epoch at the highest
    assert round3_fawa.threshold([a, b]) == 0.05
    out = subprocess.run([sys.executable, str(ROOT / "scripts/round3_fawa.py"), str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert "| seed0 | no | 7% (2 of 4) | 5% |" in out.stdout and out.stdout.rstrip().endswith("0.05")


def test_aa_cost_arithmetic_by_hand(tmp_path):
    run = tmp_path / "wat" / "seed0"
    run.mkdir(parents=True)
    (run / "eval_autoattack.json").write_text(json.dumps({
        "std_avg": 0.5, "n_samples": 1000, "seconds": 400.0,
        "components": [{"name": n, "robust_acc": a} for n, a in
                       (("APGD-CE", 0.25), ("APGD-T", 0.2), ("FAB-T", 0.2), ("Square", 0.2))]}))
    (ref,) = round3_aa_cost.reference_fractions(tmp_path)
    assert ref == {"run": "wat/seed0", "APGD-CE": 0.5, "APGD-T": 0.25, "FAB-T": 0.2, "Square": 0.2,
                   "seconds_per_1000": 400.0}
    per = {"APGD-CE": 0.2, "APGD-T": 2.0, "FAB-T": 3.0, "Square": 1.0}
    assert round3_aa_cost.per_image_cost(per, ref) == pytest.approx(0.1 + 0.5 + 0.6 + 0.2)
    assert round3_aa_cost.affordable(1.4, runs=27, hours=6) == 570  # 21600 / 37.8 = 571.4, down to 10 a class
    # the variant runs a tenth of the original's iterations but the same Square: 2.4 against 0.05+0.05+0.06+0.8
    per = {"APGD-CE": 1.0, "APGD-T": 2.0, "FAB-T": 3.0, "Square": 4.0}
    assert round3_aa_cost.original_over_variant(per, ref) == pytest.approx(2.4 / 0.96)


def _checkpoint(path: Path, reported: str = "model", big: bool = False) -> dict:
    w = torch.arange(6.0).reshape(2, 3)
    state = {"model.conv.weight": w, "model.bn.running_mean": torch.ones(2),
             "averaged_model.conv.weight": w + 100, "averaged_model.bn.running_mean": torch.zeros(2)}
    if big:
        state["model.big"] = torch.zeros(300_000)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "batlit": {"reported_weights": reported},
                "optimizer_states": [{"state": {0: {"momentum_buffer": w}}}]}, path)
    return state


def _finished_run(run: Path, reported: str = "model", big: bool = False) -> dict:
    state = _checkpoint(run / "checkpoints" / "last.ckpt", reported, big)
    (run / "metrics.json").write_text(json.dumps({"rob_per_class": [0.5], "std_per_class": [0.5], "bndy_per_class": [0.0]}))
    (run / "eval_autoattack.json").write_text(json.dumps({"ckpt": f"{run}/checkpoints/last.ckpt"}))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, label=np.arange(4, dtype=np.int16))
    (run / "eval_autoattack.npz").write_bytes(buffer.getvalue())
    return state


def _keep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KEEP, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("reported", ["model", "averaged_model"])
def test_keep_weights_is_the_reported_state_dict_alone(tmp_path, reported):
    run, kept = tmp_path / "out" / "cfa" / "seed0", tmp_path / "kept" / "cfa" / "seed0"
    state = _finished_run(run, reported)
    proc = _keep("--per-image", "--weights", str(run), str(kept))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in kept.iterdir()) == ["eval_autoattack.json", "eval_autoattack.npz", "metrics.json",
                                                       "weights.pt"]
    weights = torch.load(kept / "weights.pt", weights_only=True)
    assert sorted(weights) == ["bn.running_mean", "conv.weight"]  # no optimizer, no other model's weights
    for key in weights:
        assert torch.equal(weights[key], state[f"{reported}.{key}"])
    assert (kept / "eval_autoattack.npz").read_bytes() == (run / "eval_autoattack.npz").read_bytes()
    assert (kept / "weights.pt").stat().st_size < 4096


def test_keep_without_the_flags_keeps_what_round2_kept(tmp_path):
    run, kept = tmp_path / "out" / "pgd_at" / "seed0", tmp_path / "kept"
    _finished_run(run)
    assert _keep(str(run), str(kept)).returncode == 0
    assert sorted(p.name for p in kept.iterdir()) == ["eval_autoattack.json", "metrics.json"]


def test_keep_refuses_weights_over_a_megabyte_and_a_missing_checkpoint(tmp_path):
    run, kept = tmp_path / "out" / "bat" / "seed0", tmp_path / "kept"
    _finished_run(run, big=True)
    proc = _keep("--weights", str(run), str(kept))
    assert proc.returncode == 1 and "more than 1048576: not kept" in proc.stderr
    assert not (kept / "weights.pt").exists()
    (run / "checkpoints" / "last.ckpt").unlink()
    proc = _keep("--weights", str(run), str(tmp_path / "kept2"))
    assert proc.returncode == 1 and "--weights and no checkpoint" in proc.stderr


# ---- the tables and the claims, on a hand-made kept folder ---------------------------------------------
NAMES = ["cat", "dog"]
# robust images per (method, seed, class), as index ranges of each class's 50 images: every baseline
# set lies inside every method set, so each difference below is exact and its sign certain
ROBUST = {("trades6", 0): (30, 10), ("trades6", 1): (25, 15), ("wat", 0): (30, 25), ("wat", 1): (30, 30)}
CLEAN = {"trades6": (0.4, 0.6), "wat": (0.3, 0.4)}  # (std_avg, std_worst) errors on the full test split


def _kept_study(root: Path, index_shift: int = 0) -> Path:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "protocol.txt").write_text("round=3\n")
    label = np.repeat([0, 1], 50)
    for (method, seed), (c0, c1) in ROBUST.items():
        run = root / method / f"seed{seed}"
        run.mkdir(parents=True)
        robust = np.concatenate([np.arange(50) < c0, np.arange(50) < c1])
        adv = np.where(robust, label, 1 - label)
        index = np.arange(100) + (index_shift if method == "wat" else 0)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, index=index, label=label.astype(np.int16), clean_pred=label.astype(np.int16),
                            adv_pred=np.stack([adv] * 4).astype(np.int16), components=np.array(["a", "b", "c", "d"]),
                            fingerprint=np.array(json.dumps({"n_samples": 100})))
        (run / "eval_autoattack.npz").write_bytes(buffer.getvalue())
        per_class = [1 - c0 / 50, 1 - c1 / 50]
        (run / "eval_autoattack.json").write_text(json.dumps({
            "attack": {"name": "autoattack"}, "n_samples": 100, "per_image": "eval_autoattack.npz",
            "components": [{"name": n} for n in "abcd"], "class_names": NAMES, "seconds": 900.0,
            "std_avg": 0.0, "std_worst": 0.0, "rob_avg": sum(per_class) / 2, "rob_worst": max(per_class),
            "rob_per_class": per_class}))
        (run / "eval_pgd20.json").write_text(json.dumps({
            "attack": {"name": "pgd20"}, "n_samples": 10000, "seconds": 100.0, "std_avg": CLEAN[method][0],
            "std_worst": CLEAN[method][1], "rob_avg": 0.5, "rob_worst": 0.7}))
        (run / "metrics.json").write_text(json.dumps({"method": method, "seed": seed, "class_names": NAMES,
                                                      "wall_seconds": {"0": 1800.0, "1": 1800.0}}))
    return root


def test_claims_by_hand(tmp_path):
    study = _kept_study(tmp_path / "r3")
    (result,) = round3_claims.evaluate(study)  # WAT against TRADES(6): the only pair present
    assert result.claim.method == "wat" and result.seeds == [0, 1] and result.images == 100
    # worst class: WAT (0.5 + 0.6)/2 = 0.55, TRADES(6) (0.2 + 0.3)/2 = 0.25; average 0.575 against 0.4
    assert result.worst["diff"] == pytest.approx(30.0) and result.avg["diff"] == pytest.approx(17.5)
    assert 0 < result.worst["low"] <= 30.0 <= result.worst["high"] and result.avg["low"] > 0
    # McNemar on the pooled images: 15 + 20 robust under WAT alone, none under TRADES(6) alone
    assert result.mcnemar_all == (35, 0, pytest.approx(2 * 0.5**35))
    assert result.worst_class == "dog" and result.mcnemar_worst == (30, 0, pytest.approx(2 * 0.5**30))
    # ρ: (0.55 − 0.25)/0.25 − (0.4 − 0.575)/0.4 = 1.6375; clean: (0.6 − 0.4)/0.4 − (0.6 − 0.7)/0.6
    assert result.rho_rob == pytest.approx(1.6375) and result.rho_nat == pytest.approx(0.5 + 0.1 / 0.6)
    assert result.verdict.startswith("holds (worst-class McNemar p = ")
    assert result.worst_se > 0
    text = round3_claims.table([result])
    assert "| +WAT vs TRADES(6): WAT (AAAI 2023)" in text and "| 0,1 | +30.0 [" in text and "35/0, p = 5.8e-11" in text
    assert f"from {2 * result.worst_se:.1f} points" in round3_claims.power_line([result])


@pytest.mark.parametrize("worst,avg,p,average_up,expected", [
    ({"low": 1.0, "high": 5.0}, 2.0, 0.01, False, "holds"),
    ({"low": 1.0, "high": 5.0}, -2.0, 0.01, False, "worst class up, at an average cost"),
    ({"low": 1.0, "high": 5.0}, -2.0, 0.2, False, "holds"),
    ({"low": 1.0, "high": 5.0}, -2.0, 0.2, True, "worst class only (average within noise)"),
    ({"low": -5.0, "high": -1.0}, 2.0, 0.01, False, "reversed"),
    ({"low": -1.0, "high": 5.0}, -2.0, 0.01, False, "within noise; average falls"),
    ({"low": -1.0, "high": 5.0}, -2.0, 0.06, False, "within noise"),
])
def test_verdicts(worst, avg, p, average_up, expected):
    claim = round3_claims.Claim("m", "b", "s", average_up=average_up)
    assert round3_claims.verdict(claim, worst, avg, p, 0.5) == f"{expected} (worst-class McNemar p = 0.5; average p = {p:.2g})"


def test_claims_refuse_runs_on_different_images(tmp_path):
    study = _kept_study(tmp_path / "r3", index_shift=5)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/round3_claims.py"), str(study)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("round3_claims: ") and "different test images" in proc.stderr


def test_tables_by_hand(tmp_path):
    study = _kept_study(tmp_path / "r3")
    aa = round3_tables.table(study, "autoattack")
    # WAT: robust accuracy (0.6+0.5)/2 and (0.6+0.6)/2 -> 57.5 ± 3.5; worst 55.0 ± 7.1; ρ against TRADES(6) 1.6375
    assert "| +WAT | 2 | 100.0 ± 0.0 | 100.0 ± 0.0 | 57.5 ± 3.5 | 55.0 ± 7.1 | +1.63" in aa and "| - | dog, dog |" in aa
    assert "| TRADES(6) | 2 | 100.0 ± 0.0 | 100.0 ± 0.0 | 40.0 ± 0.0 | 25.0 ± 7.1 | +0.000 | - | dog, dog |" in aa
    assert "on the same 100 test images" in aa
    pgd = round3_tables.table(study, "pgd20")
    assert "| +WAT | 2 | 70.0 ± 0.0 | 60.0 ± 0.0 | 50.0 ± 0.0 | 30.0 ± 0.0 |" in pgd
    text, seconds, runs = round3_tables.cost(study)
    assert runs == 4 and seconds == pytest.approx(4 * (3600 + 900 + 100))
    assert "| +WAT | 2 | 60.0 | - | 100 | 900 | 2.56 |" in text and "5.11 h over 4 runs" in text


def test_study_script_refuses_bad_input_before_any_work(tmp_path):
    python = tmp_path / "py"  # any use of Python (the first step of any work) fails the test, trains nothing
    python.write_text("#!/usr/bin/env bash\necho \"python ran: $*\" >&2\nexit 3\n")
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "OUT": str(tmp_path / "out"), "RESULTS": str(tmp_path / "kept")}
    for key, value, says in (("METHODS", "trades6 nope", "no conf/experiment/study3_nope.yaml for 'nope'"),
                             ("SEEDS", "0 x", "'x' is not a non-negative integer"),
                             ("AA_SAMPLES", "0", "AA_SAMPLES must be a positive integer")):
        proc = subprocess.run(["bash", "scripts/study_round3.sh"], cwd=ROOT, env={**env, key: value},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and says in proc.stderr, (key, proc.stderr)
    assert not (tmp_path / "out").exists() and not (tmp_path / "kept").exists()


@pytest.mark.slow
def test_round3_dry_run_keeps_weights_and_per_image_files_and_resumes(tmp_path, shared_cifar10_jpeg):
    """scripts/study_round3.sh on a few hundred real images, one seed, TRADES(6), WAT and FAAL (a
    fine-tuning); then again with only the kept results (a new machine): nothing is trained again."""
    import yaml
    from omegaconf import OmegaConf

    from batlit.checkpoint.store import build_model

    results = tmp_path / "results"
    env = {**os.environ, "BATLIT_DRY_RUN": "1", "SEEDS": "0", "PYTHON": sys.executable, "RESULTS": str(results),
           "METHODS": "trades6 wat faal_trades"}

    def study(out: str) -> list[str]:
        proc = subprocess.run(["bash", "scripts/study_round3.sh"], cwd=ROOT, capture_output=True, text=True,
                              timeout=1800, env={**env, "OUT": str(tmp_path / out)})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout.splitlines()

    first = study("first")
    assert first.index("autoattack trades6/seed0") < first.index("training wat/seed0")
    for run in ("trades6/seed0", "wat/seed0", "faal_trades/seed0"):
        assert sorted(p.name for p in (results / run).iterdir()) == [
            "config.yaml", "csv", "eval_autoattack.json", "eval_autoattack.npz", "eval_pgd20.json",
            "eval_pgd20.npz", "metrics.json", "weights.pt"], run
        weights = torch.load(results / run / "weights.pt", weights_only=True)
        model = build_model(OmegaConf.create(yaml.safe_load((results / run / "config.yaml").read_text())))
        model.load_state_dict(weights)  # strict: exactly the model's weights, as docs/results_round3.md loads them
        assert (results / run / "weights.pt").stat().st_size < 1 << 20
        aa = json.loads((results / run / "eval_autoattack.json").read_text())
        assert aa["eval_seed"] == 0 and aa["n_samples"] == 20 and aa["components"][0]["name"] == "APGD-CE"
    second = study("second")
    assert {"kept     trades6/seed0", "kept     wat/seed0", "kept     faal_trades/seed0"} <= set(second)
    assert not (tmp_path / "second" / "trades6").exists()  # nothing kept is trained or evaluated again
    assert "| +WAT | 1 |" in (results / "tables.md").read_text()
    claims = (results / "claims.md").read_text()
    assert "| +WAT vs TRADES(6)" in claims and "| +FAAL vs TRADES(6)" in claims and "Power: on 20 images" in claims
