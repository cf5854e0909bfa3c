"""batlit.evaluate's per-image file, the evaluation subset fixed by
eval_seed whatever the run's seed, and a killed evaluation resuming to the result of an
uninterrupted one. Two tiny digits runs (seeds 0 and 1; digits has a fixed test split) are trained
once for the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from batlit.evaluate import evaluate

from conftest import ROOT, run_cli

DIGITS = ["data=digits", "model=small_cnn", "trainer=cpu", "epochs=1", "attack=digits", "attack.train.steps=2",
          "attack.val.steps=2", "attack.test.steps=2", "trainer.enable_progress_bar=false", "method=pgd_at"]


ARGS = ["attack=pgd20", "attack.steps=80", "n_samples=120", "batch_size=10", "progress_bar=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs (seeds 0 and 1), each evaluated once, uninterrupted, with ARGS (one process)."""
    out = tmp_path_factory.mktemp("digits")
    proc = run_cli("batlit.train", "-m", *DIGITS, "seed=0,1", f"hydra.sweep.dir={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    dirs = [out / "0", out / "1"]
    proc = run_cli("batlit.evaluate", "-m", "ckpt=" + ",".join(str(d / "checkpoints" / "last.ckpt") for d in dirs),
                   *ARGS, f"hydra.sweep.dir={out}")  # each job writes beside its run (out_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dirs


def _load(out_dir, stem="eval_pgd20"):
    record = json.loads((out_dir / f"{stem}.json").read_text())
    with np.load(out_dir / record["per_image"]) as z:
        return record, {k: z[k] for k in z.files}


def test_two_seeds_see_the_same_images_and_the_file_holds_each_images_outcome(runs):
    from batlit.checkpoint.store import datamodule_for, load_run
    from batlit.data import DigitsDataModule

    outs = [_load(run_dir) for run_dir in runs]
    (rec0, z0), (rec1, z1) = outs
    assert (rec0["seed"], json.loads((runs[1] / "metrics.json").read_text())["seed"]) == (0, 1)
    assert np.array_equal(z0["index"], z1["index"]) and np.array_equal(z0["label"], z1["label"])
    assert rec0["subset"] == rec1["subset"] == json.loads(str(z0["fingerprint"]))
    assert rec0["eval_seed"] == 0 and rec0["per_image"] == "eval_pgd20.npz"
    assert np.bincount(z0["label"], minlength=10).tolist() == [12] * 10  # class-balanced
    # each index is that image's place in the digits test split, with its label
    dm = DigitsDataModule()
    dm.setup("test")
    assert np.array_equal(dm.test_y.numpy()[z0["index"]], z0["label"])
    # the file's outcomes are the JSON's numbers
    for rec, z in outs:
        robust = z["adv_pred"][-1] == z["label"]
        per_class = np.bincount(z["label"][robust], minlength=10) / np.bincount(z["label"], minlength=10)
        assert per_class.tolist() == pytest.approx(rec["components"][-1]["robust_acc_per_class"])
        assert (1 - per_class).tolist() == pytest.approx(rec["rob_per_class"])
        std = np.bincount(z["label"][z["clean_pred"] != z["label"]], minlength=10) / np.bincount(z["label"], minlength=10)
        assert std.tolist() == pytest.approx(rec["std_per_class"])
        assert list(z["components"]) == ["PGD-80 (ce)"] and z["adv_pred"].shape == (1, 120)
    # 63 images: 6 a class and one more for classes 0, 1, 2; another eval_seed, other images
    config = load_run(runs[0] / "checkpoints" / "last.ckpt").config
    picked = {s: datamodule_for(config, test_subset=63, eval_seed=s) for s in (0, 1)}
    assert np.bincount(picked[0].test_y.numpy(), minlength=10).tolist() == [7, 7, 7] + [6] * 7
    assert not torch.equal(picked[0].test_index, picked[1].test_index)


def test_n_samples_beyond_the_test_split_is_one_line(runs, tmp_path):
    proc = run_cli("batlit.evaluate", f"ckpt={runs[0] / 'checkpoints' / 'last.ckpt'}", f"out_dir={tmp_path}",
                   "n_samples=5000")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "n_samples=5000 is more than the 450 test images of digits" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("*eval_*"))


def test_eval_seed_below_zero_is_a_config_error(tmp_path):
    from omegaconf import OmegaConf

    from batlit.config import ConfigError
    from batlit.evaluate import check_config

    (tmp_path / "x.ckpt").write_bytes(b"")
    cfg = OmegaConf.create({"ckpt": str(tmp_path / "x.ckpt"), "device": "cpu", "n_samples": 10, "batch_size": 8,
                            "eps": None, "eval_seed": -1, "attack": {"kind": "none"}})
    with pytest.raises(ConfigError, match="eval_seed must be an integer >= 0, got -1"):
        check_config(cfg)
    check_config(OmegaConf.merge(cfg, {"eval_seed": 3}))


@pytest.mark.slow  # a real SIGKILL; test_each_batchs_randomness_is_its_own resumes in-process in `make test`
def test_a_killed_evaluation_resumes_to_the_uninterrupted_result(runs, tmp_path):
    ckpt = runs[0] / "checkpoints" / "last.ckpt"
    killed = tmp_path / "killed"
    partial = killed / ".eval_pgd20.partial.npz"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "batlit.evaluate", f"ckpt={ckpt}", f"out_dir={killed}", *ARGS],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with np.load(partial) as z:
        done = int(z["batches"])
    assert 1 <= done < 12 and not (killed / "eval_pgd20.json").exists()
    # a different evaluation neither takes the partial file over nor deletes it
    other = run_cli("batlit.evaluate", f"ckpt={ckpt}", f"out_dir={killed}", *ARGS[:3], "batch_size=20")
    assert other.returncode == 2 and "batch_size=10" in other.stderr and "batch_size=20" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1 and partial.exists()
    resumed = run_cli("batlit.evaluate", f"ckpt={ckpt}", f"out_dir={killed}", *ARGS)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming pgd20 from .eval_pgd20.partial.npz: {done} of 12 batches" in resumed.stdout
    assert not partial.exists()
    (a, za), (b, zb) = _load(runs[0]), _load(killed)
    assert (a["resumed_batches"], b["resumed_batches"]) == (0, done)
    for key in ("rob_per_class", "std_per_class", "bndy_per_class", "count_per_class", "components", "subset"):
        assert a[key] == b[key], key
    for key in ("index", "label", "clean_pred", "adv_pred"):
        assert np.array_equal(za[key], zb[key]), key


class Coin(nn.Module):
    """Two classes by the first pixel: class 1 iff p > 0.5."""

    def forward(self, x):
        z = 10.0 * (x.flatten(1)[:, :1] - 0.5)
        return torch.cat([torch.zeros_like(z), z], 1)


def test_each_batchs_randomness_is_its_own():
    """An attack that draws from the global RNG: evaluating from batch 3 on, after other draws,
    gives what the uninterrupted evaluation gave (the per-batch seed, batch_seed)."""
    calls = []

    def noise(x, y):
        calls.append(len(x))
        return torch.rand_like(x)  # a random image: its class is a coin flip

    x = torch.full((60, 1, 1, 1), 0.9)
    batches = [(x[i:i + 10], torch.ones(10, dtype=torch.long)) for i in range(0, 60, 10)]
    kept = {}
    whole = evaluate(Coin(), batches, [("noise", noise)], 2, torch.device("cpu"), progress=False, seed=5,
                     on_batch=lambda b, so_far: kept.setdefault(b, so_far))
    torch.rand(1000)  # history that must not matter
    calls.clear()
    resumed = evaluate(Coin(), batches, [("noise", noise)], 2, torch.device("cpu"), progress=False, seed=5,
                       done=kept[2])
    assert calls == [10, 10, 10]  # batches 0-2 came from `done`: only 3-5 were attacked
    assert 0 < int((whole["adv_pred"][0] == 1).sum()) < 60  # the draws do decide the outcome
    assert torch.equal(whole["adv_pred"], resumed["adv_pred"]) and torch.equal(whole["label"], resumed["label"])
    assert whole["robust_after"] == resumed["robust_after"]
