"""Exact resume after SIGKILL, atomic checkpoints, early config errors, the NaN guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from batlit.checkpoint.store import AtomicCheckpointIO, atomic_torch_save, check_resumable, read_checkpoint
from batlit.config import ConfigError

from conftest import ROOT, TINY, run_cli, train

# Three epochs of PGD-AT on digits with a validation split: a few seconds per epoch on 2 cores.
# Validation every 2nd epoch: checkpoints must still be written after every epoch.
RESUMABLE = ["experiment=quickstart", "epochs=3", "trainer.check_val_every_n_epoch=2",
             "attack.val.steps=2", "attack.test.steps=3", "trainer.enable_progress_bar=false",
             "scheduler.milestones=[2]"]


def _kill_after_first_checkpoint(run_dir: Path, *overrides: str) -> int:
    """Start training, SIGKILL it once the first epoch's checkpoint is on disk; the epoch it reached."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "batlit.train", *overrides, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # into the next epoch (an epoch takes about a second)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not (run_dir / "metrics.json").exists()
    return read_checkpoint(last)["epoch"]


def test_resume_after_sigkill_gives_the_uninterrupted_metrics(tmp_path):
    """Also run-to-run determinism on CPU: the killed run's first epoch is another process's."""
    whole = train(tmp_path / "whole", *RESUMABLE, tiny=False)
    epoch = _kill_after_first_checkpoint(tmp_path / "killed", *RESUMABLE)
    assert epoch == 0  # the first epoch's checkpoint, though it had no validation; two epochs left
    killed_fit = read_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt")["callbacks"]["Timer"]
    killed_fit = killed_fit["time_elapsed"]["train"]
    resumed = train(tmp_path / "killed", *RESUMABLE, "resume=true", tiny=False)
    for key in ("std_per_class", "bndy_per_class", "rob_per_class", "adv_confusion"):
        assert resumed[key] == whole[key], key
    assert resumed["val"] == whole["val"]
    final = read_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    assert final["epoch"] == 2 and final["batlit"]["model"].startswith("batlit.models.")
    assert final["batlit"]["version"] and final["batlit"]["data"].endswith("DigitsDataModule")
    # the CSV log keeps the epochs before the kill (Lightning's CSVLogger deletes the file on reopen)
    assert _csv_epochs(tmp_path / "killed") == _csv_epochs(tmp_path / "whole")
    # wall time: the killed session's fit time (kept in its checkpoint) counts in the resumed run's
    # (the exact carry-over is tests/cli/test_train_cli.py::test_wall_seconds_adds_the_fit_time_of_earlier_sessions)
    later_epochs = sum(_epoch_seconds(tmp_path / "killed")[1:])
    assert killed_fit > 0 and resumed["wall_seconds"]["fit"] >= killed_fit + later_epochs
    assert whole["wall_seconds"]["test"] > 0


def _epoch_seconds(run_dir: Path) -> list[float]:
    import csv

    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return [float(r["perf/epoch_seconds"]) for r in csv.DictReader(f) if r.get("perf/epoch_seconds")]


def _csv_epochs(run_dir: Path) -> dict[str, list[int]]:
    """For each per-epoch column of the run's metrics.csv, the epochs that logged it, in file order."""
    import csv

    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ("perf/epoch_seconds", "val/rob_worst", "train/loss", "test/rob_avg")
    found = {c: [int(float(r["epoch"])) for r in rows if r.get(c)] for c in columns}
    assert found["perf/epoch_seconds"] == [0, 1, 2], found
    return found


@pytest.fixture
def trained(hot_start) -> Path:
    return hot_start


def test_resume_refuses_a_mismatched_or_missing_checkpoint(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    proc = run_cli("batlit.train", *TINY, "method=pgd_at", "data.val_size=40", "resume=true", "model=resnet18", "model.width=8",
                   f"hydra.run.dir={trained}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"batlit: config error: resume: '{ckpt}' was trained with model._target_=batlit.models.small_cnn, "
        "this run has model._target_=batlit.models.resnet18"]
    assert ckpt.read_bytes() == before  # a refused resume leaves the checkpoint alone
    proc = run_cli("batlit.train", *TINY, f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2 and "ckpt_path: no checkpoint file at" in proc.stderr


def test_check_resumable_names_the_first_differing_key(trained):
    from omegaconf import OmegaConf

    ckpt = trained / "checkpoints" / "last.ckpt"
    saved = OmegaConf.create(read_checkpoint(ckpt)["hyper_parameters"]["run_config"])
    check_resumable(ckpt, saved)  # the run's own config resumes
    longer = OmegaConf.merge(saved, {"epochs": 50, "optimizer": {"lr": 0.01}})
    check_resumable(ckpt, longer)  # schedules may change on resume
    for key, value in (("method._target_", "batlit.methods.BAT"), ("data.num_classes", 100),
                       ("model.width", 64)):
        other = saved.copy()
        OmegaConf.update(other, key, value)
        with pytest.raises(ConfigError, match=f"trained with {key}="):
            check_resumable(ckpt, other)


def test_atomic_save_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"w": torch.ones(3)}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # what a kill looks like to the writer

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_checkpoints_load_with_weights_only(trained, monkeypatch):
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real(*a, **k))
    ckpt = AtomicCheckpointIO().load_checkpoint(trained / "checkpoints" / "last.ckpt")
    assert calls == [True] and "optimizer_states" in ckpt and "run_config" in ckpt["hyper_parameters"]


def test_nonfinite_loss_stops_naming_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path):
    # a sane first epoch, then the schedule multiplies the learning rate by 1e30 from (1-based) epoch 2
    proc = run_cli("batlit.train", *TINY, "method=standard", "epochs=3", "scheduler=multistep",
                   "scheduler.milestones=[2]", "scheduler.gamma=1e30", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("batlit: training error: non-finite training loss") and "at epoch 1, step" in line
    assert "the last good checkpoint is" in line and "Traceback" not in proc.stderr
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("override,key", [
    ("method=trades method.beta=-1", "method.beta"),
    ("method=bat method.alpha=-0.5", "method.alpha"),
    ("method=bat method.tau=-1", "method.tau"),
    ("attack.val.loss=hinge", "attack.val.loss"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay"),
    ("data.num_workers=-1", "data.num_workers"),
    ("resume=maybe", "resume"),
    ("slurm.requeue_signal=SIGNOPE", "slurm.requeue_signal"),
])
def test_more_bad_values_fail_before_training(tmp_path, override, key):
    proc = run_cli("batlit.train", *TINY, *override.split(), f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().startswith(f"batlit: config error: {key}") and "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("data", ["cifar10 data.download=false", "image_folder"])
def test_missing_data_root_fails_at_once_naming_it(tmp_path, data):
    proc = run_cli("batlit.train", *TINY, *f"data={data}".split(), f"data.root={tmp_path / 'nowhere'}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"batlit: config error: data.root: no dataset at '{tmp_path / 'nowhere'}'"
        + (" and data.download=false" if "download" in data else "")]


def test_a_non_image_file_in_an_image_folder_is_one_line_before_training(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i}.png")
    (tmp_path / "data" / "train" / "dog" / "notes.png").write_text("not an image")
    proc = run_cli("batlit.train", *TINY, "data=image_folder", f"data.root={tmp_path / 'data'}",
                   "data.image_size=8", f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("batlit: config error: data:") and "notes.png" in line and "not a decodable image" in line
    assert not (tmp_path / "run" / "checkpoints").exists()
