"""The ``batlit`` record of a training checkpoint, written by the harness's callback
(batlit.checkpoint.record), holds the keys and values the method's own hook wrote before the
library and the harness were separated, in the same order; load_run reads it back."""

from __future__ import annotations

import torch

import batlit
from batlit.checkpoint.record import BatlitRecord, batlit_record
from batlit.checkpoint.store import CHECKPOINT_FORMAT, load_run
from batlit.methods import PGDAT
from conftest import linear_model

ATTACK = {"eps": 8 / 255, "train": {"steps": 1, "step_size": 2 / 255}, "val": {"steps": 1, "step_size": 2 / 255},
          "test": {"steps": 1, "step_size": 2 / 255}}


def test_a_training_checkpoint_holds_the_same_record_as_before(hot_start):
    ckpt = torch.load(hot_start / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert list(ckpt) == ["epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
                          "optimizer_states", "lr_schedulers", "hparams_name", "hyper_parameters", "batlit"]
    assert list(ckpt["batlit"].items()) == [
        ("version", batlit.__version__), ("format", CHECKPOINT_FORMAT),
        ("class_names", [f"class{c}" for c in range(10)]), ("num_classes", 10), ("method", "PGDAT"),
        ("reported_weights", "model"), ("model", "batlit.models.small_cnn"),
        ("data", "batlit.data.SyntheticDataModule")]
    # the record's callback keeps no state of its own: the callbacks' states are those of before
    assert list(ckpt["callbacks"]) == ["Timer", "ModelCheckpoint{'monitor': None, 'mode': 'min', "
                                       "'every_n_train_steps': 0, 'every_n_epochs': 1, 'train_time_interval': None}"]
    assert load_run(hot_start / "checkpoints" / "last.ckpt").class_names == [f"class{c}" for c in range(10)]


def test_the_record_follows_the_method_and_its_reported_weights():
    run = {"model": {"_target_": "batlit.models.small_cnn"}, "data": {"_target_": "batlit.data.DigitsDataModule"}}
    method = PGDAT(linear_model(3), attack=ATTACK, optimizer={"name": "sgd", "lr": 0.1}, class_names=["a", "b", "c"],
                   run_config=run)
    method.reported_weights = "averaged_model"  # CFA's, once its averaged model is what it reports
    checkpoint = {}
    BatlitRecord().on_save_checkpoint(None, method, checkpoint)
    assert checkpoint == {"batlit": batlit_record(method)}
    assert checkpoint["batlit"] == {"version": batlit.__version__, "format": CHECKPOINT_FORMAT,
                                    "class_names": ["a", "b", "c"], "num_classes": 3, "method": "PGDAT",
                                    "reported_weights": "averaged_model", "model": "batlit.models.small_cnn",
                                    "data": "batlit.data.DigitsDataModule"}
