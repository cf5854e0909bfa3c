"""Resume in-process: batlit.train's choice of the checkpoint to resume from, and the CSV history kept
up to the checkpoint's epoch on a hand-written log (the whole kill-and-resume path is in
run/test_reliability.py)."""

from __future__ import annotations

import csv

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from batlit.checkpoint.store import keep_csv_history
from batlit.train import resume_path


@pytest.mark.filterwarnings("ignore:.*Previous log files")
def test_resume_keeps_the_rows_up_to_the_checkpoints_epoch_and_drops_test_rows(tmp_path):
    logger = CSVLogger(tmp_path, name="", version="")
    log = tmp_path / "metrics.csv"
    log.write_text("epoch,step,train/loss,test/rob_avg\n0,3,1.5,\n1,7,1.2,\n2,11,1.0,\n2,11,,0.6\n")
    torch.save({"epoch": 1}, tmp_path / "last.ckpt")  # the checkpoint holds epochs 0 and 1
    keep_csv_history([logger], tmp_path / "last.ckpt")
    rows = list(csv.DictReader(log.open()))
    assert [(r["epoch"], r["train/loss"]) for r in rows] == [("0", "1.5"), ("1", "1.2")]


def test_resume_continues_from_last_ckpt_only_when_it_exists(tmp_path):
    cfg = OmegaConf.create({"resume": True, "ckpt_path": None})
    assert resume_path(cfg, tmp_path) is None  # nothing yet: start from scratch
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resume_path(cfg, tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    assert resume_path(OmegaConf.create({"resume": False, "ckpt_path": None}), tmp_path) is None
    assert resume_path(OmegaConf.create({"resume": False, "ckpt_path": "x.ckpt"}), tmp_path).name == "x.ckpt"
