"""data.classes / data.exclude_classes on every DataModule (the paper's Table 4)."""

from __future__ import annotations

import re

import pytest
import torch

from batlit.data import DigitsDataModule, SyntheticDataModule

from conftest import train
from conftest import compose_config as _compose


def _setup(cls, **kwargs):
    dm = cls(**kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_exclude_classes_remaps_labels_and_keeps_names():
    full = _setup(DigitsDataModule)
    dm = _setup(DigitsDataModule, exclude_classes=[2, 3, 4, 5])
    assert dm.num_classes == 6 and dm.class_names == ["0", "1", "6", "7", "8", "9"]
    for y in (dm.train_y, dm.test_y):
        assert set(y.unique().tolist()) == set(range(6))
    # the kept classes keep all their images: class "6" of the full set is class 2 here
    assert (dm.test_y == 2).sum() == (full.test_y == 6).sum()
    assert torch.equal(dm.test_x[dm.test_y == 2], full.test_x[full.test_y == 6])


def test_classes_by_name_or_index_in_the_original_order():
    dm = _setup(SyntheticDataModule, n_train=100, n_test=50, image_size=8, classes=["class7", 1, "class3"],
                num_classes=3, generated_classes=10)
    assert dm.class_names == ["class1", "class3", "class7"] and dm.num_classes == 3
    assert dm.test_y.max() == 2


@pytest.mark.parametrize("kwargs,message", [
    ({"classes": [1], "n_train": 40, "n_test": 20}, "1 class(es) left"),
    ({"exclude_classes": ["cat"], "n_train": 40, "n_test": 20}, "'cat' is neither a class index"),
    ({"classes": [0, 12], "n_train": 40, "n_test": 20}, "12 is neither"),
])
def test_bad_class_selection_names_the_key(kwargs, message):
    key = "data.classes" if "classes" in kwargs else "data.exclude_classes"
    with pytest.raises(ValueError, match=f"{key}: .*{re.escape(message)}"):
        _setup(SyntheticDataModule, image_size=8, num_classes=None, generated_classes=10, **kwargs)
    with pytest.raises(ValueError, match="set one of them"):
        SyntheticDataModule(classes=[1, 2], exclude_classes=[3])


def test_the_model_follows_the_kept_class_count():
    cfg = _compose("data=cifar10", "data.exclude_classes=[2,3,4,5]")
    assert cfg.data.num_classes == 6 and cfg.model.num_classes == 6
    assert _compose("data=cifar100", "data.classes=[0,1,2]").model.num_classes == 3
    assert _compose("data=cifar10").model.num_classes == 10


def test_training_without_some_classes_through_the_cli(tmp_path):
    record = train(tmp_path, "method=pgd_at", "data.exclude_classes=[class2,class3,class4,class5]")
    assert record["num_classes"] == 6 and record["class_names"] == ["class0", "class1", "class6", "class7",
                                                                      "class8", "class9"]
    assert len(record["rob_per_class"]) == 6
    from batlit.checkpoint.store import datamodule_for, load_run

    run = load_run(tmp_path / "checkpoints" / "last.ckpt")  # evaluate/analyze re-create the same selection
    assert run.class_names == record["class_names"] and datamodule_for(run.config).num_classes == 6


@pytest.mark.parametrize("val_size,train_subset", [(0.2, None), (15, 40)])
def test_train_labels_are_what_the_split_is_drawn_from(val_size, train_subset):
    """ImageDataModule.train_labels (the hot-start check's labels) are the selected classes' training
    labels before the split: batlit.data.split_indices on them gives setup's validation and training images."""
    from batlit.data import split_indices

    kw = dict(n_train=120, n_test=20, image_size=8, generated_classes=6, num_classes=4, exclude_classes=[0, "class4"])
    whole = _setup(SyntheticDataModule, seed=5, **kw)  # no split, no subset: every selected training image
    dm = _setup(SyntheticDataModule, val_size=val_size, train_subset=train_subset, seed=5, **kw)
    labels = dm.train_labels()
    assert torch.equal(labels, whole.train_y) and labels.max() == 3
    val_idx, train_idx = split_indices(labels, val_size, 5, train_subset)
    assert torch.equal(whole.train_x[val_idx], dm.val_x) and torch.equal(whole.train_y[val_idx], dm.val_y)
    assert torch.equal(whole.train_x[train_idx], dm.train_x)
