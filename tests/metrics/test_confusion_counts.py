"""The evaluation's adversarial confusion matrix: torchmetrics' counts, without a host sync.

torchmetrics' ``MulticlassConfusionMatrix`` counts with ``torch.bincount``, which on a GPU reads
its input's maximum back to the host: two syncs per validation or test batch. ``ConfusionCounts``
gives the same matrix by ``scatter_add_`` on the device; here an evaluation step runs with
``torch.bincount`` and every other host read-back made to raise (tests/conftest.py's ``no_hidden_reads`` trap).
"""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from batlit import sync
from batlit.metrics import ConfusionCounts
from batlit.methods import BAT, PGDAT
from batlit.models import small_cnn

ATTACK = {"eps": 0.1, "train": {"steps": 4, "step_size": 0.05}, "val": {"steps": 2, "step_size": 0.05},
          "test": {"steps": 2, "step_size": 0.05}}
OPT = {"name": "sgd", "lr": 0.1}


def test_the_counts_are_torchmetrics_confusion_matrix():
    g = torch.Generator().manual_seed(0)
    ours, theirs = ConfusionCounts(5), MulticlassConfusionMatrix(5)
    for n in (7, 1, 30):
        preds, target = torch.randint(0, 5, (n,), generator=g), torch.randint(0, 5, (n,), generator=g)
        ours.update(preds, target)
        theirs.update(preds, target)
    assert torch.equal(ours.compute(), theirs.compute())
    logits = torch.randn(9, 5, generator=g)
    ours.reset()
    ours.update(logits, torch.arange(9) % 5)
    counts = ours.compute()  # logits count as their argmax
    assert torch.equal(counts.sum(0), torch.bincount(logits.argmax(1), minlength=5))
    assert torch.equal(counts.sum(1), torch.bincount(torch.arange(9) % 5, minlength=5))


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="N labels each"):
        ConfusionCounts(3).update(torch.zeros(4, dtype=torch.long), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("cls", [PGDAT, BAT])
@pytest.mark.parametrize("phase", ["val", "test"])
def test_an_evaluation_batch_makes_no_host_read(cls, phase, no_hidden_reads, monkeypatch):
    monkeypatch.setattr(torch, "bincount", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("torch.bincount reads its input's maximum back from a GPU")))
    torch.manual_seed(0)
    method = cls(small_cnn(num_classes=3, in_channels=1, width=4), attack=ATTACK, optimizer=OPT)
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    with sync.counting() as found:
        (method.validation_step if phase == "val" else method.test_step)((x, y), 0)
    assert dict(found) == {}
    monkeypatch.undo()  # computing the epoch's results reads back once, after the last batch
    assert int(getattr(method, f"{phase}_confusion").compute().sum()) == 6
