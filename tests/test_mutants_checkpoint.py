"""Resume's CSV history on a hand-written log (a gap found by scripts/mutants.py, docs/testing.md;
the whole kill-and-resume path is in test_reliability.py)."""

from __future__ import annotations

import csv

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from batlit.checkpoint.store import keep_csv_history


@pytest.mark.filterwarnings("ignore:.*Previous log files")
def test_resume_keeps_the_rows_up_to_the_checkpoints_epoch_and_drops_test_rows(tmp_path):
    logger = CSVLogger(tmp_path, name="", version="")
    log = tmp_path / "metrics.csv"
    log.write_text("epoch,step,train/loss,test/rob_avg\n0,3,1.5,\n1,7,1.2,\n2,11,1.0,\n2,11,,0.6\n")
    torch.save({"epoch": 1}, tmp_path / "last.ckpt")  # the checkpoint holds epochs 0 and 1
    keep_csv_history([logger], tmp_path / "last.ckpt")
    rows = list(csv.DictReader(log.open()))
    assert [(r["epoch"], r["train/loss"]) for r in rows] == [("0", "1.5"), ("1", "1.2")]
