"""Host syncs per training step, counted on the CPU.

Every read of a device value that batlit makes on purpose goes through ``batlit.sync``; here any
other read-back inside a training step (``.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``,
``nonzero``, ``.cpu()``, a boolean-mask index) raises, and the deliberate ones are counted: none
per step for every method but the early-stopping attacks, whose compaction reads once per attack
step (docs/performance.md). The on-device loader uploads one index tensor per epoch, not one list
per batch.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from batlit import sync
from batlit.data.base import DeviceBatch, DeviceBatchSampler, EpochRandomSampler, TensorImageDataset
from batlit.methods import BAT, CFA, DAFA, FAAL, FAT, FRL, GAIRAT, PGDAT, TRADES, WAT
from batlit.models import small_cnn

K = 4  # attack steps
ATTACK = {"eps": 0.1, "train": {"steps": K, "step_size": 0.05}, "val": {"steps": 2, "step_size": 0.05},
          "test": {"steps": 2, "step_size": 0.05}}
OPT = {"name": "sgd", "lr": 0.1}
def _method(cls, **kwargs):
    torch.manual_seed(0)
    model = small_cnn(num_classes=3, in_channels=1, width=4)
    return cls(model, attack=ATTACK, optimizer=OPT, **kwargs)


CASES = {
    "pgd_at": (PGDAT, {}, 0),
    "trades": (TRADES, {}, 0),
    "gairat": (GAIRAT, {"begin_epoch": 1}, 0),            # GA-PGD: all K steps, nothing compacted
    "bat_nosync": (BAT, {"compact": False, "early_exit": False}, 0),
    "frl": (FRL, {}, 0),
    "cfa": (CFA, {"fawa": False, "begin": 1}, 0),
    "wat": (WAT, {}, 0),
    "dafa": (DAFA, {"warmup_epoch": 1}, 0),
    "faal": (FAAL, {}, 0),
    "bat": (BAT, {}, K),                                    # compaction: one read per attack step at most
    "bat_frozen": (BAT, {"compact": False}, K),             # early exit: one read per attack step at most
    "fat": (FAT, {}, K),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_training_step_reads_back_only_through_batlit_sync(name, no_hidden_reads, monkeypatch):
    from lightning.pytorch import LightningModule

    cls, kwargs, most = CASES[name]
    method = _method(cls, **kwargs)
    monkeypatch.setattr(LightningModule, "current_epoch", property(lambda self: 1))  # past every warm-up
    if name == "frl":
        method.lambda_eps.copy_(torch.tensor([0.5, -0.2, 0.1]))  # class-wise margins
    if name == "dafa":
        method.weight.copy_(torch.tensor([0.8, 1.0, 1.2]))
    if name == "cfa":
        method.eps_scale.copy_(torch.tensor([0.6, 1.0, 1.4]))
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    with sync.counting() as found:
        examples = method.perturb(x, y)
        loss = method.objective(x, y, examples)["loss"]
        loss.backward()
    reads = sum(found.values())
    assert reads <= most, dict(found)
    if most:
        assert set(found) <= {"nonzero_rows", "any_true"} and reads >= 1, dict(found)


def test_the_deliberate_reads_are_counted():
    with sync.counting() as found:
        assert sync.nonzero_rows(torch.tensor([True, False, True])).tolist() == [0, 2]
        assert sync.any_true(torch.tensor([False, True])) is True
        assert sync.read(torch.tensor([1.5])) == 1.5 and sync.read(torch.tensor([1, 2])) == [1, 2]
    assert dict(found) == {"nonzero_rows": 1, "any_true": 1, "read": 2}


def test_on_device_batches_slice_one_uploaded_order(monkeypatch):
    """data.on_device: the epoch's order is uploaded once and each batch is a slice of it; the
    batches are the ones the plain sampler gives, in its order, and shuffle by epoch."""
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    dataset = TensorImageDataset(images, torch.arange(10))
    sampler = EpochRandomSampler(dataset, seed=3)
    batches = DeviceBatchSampler(sampler, batch_size=4, drop_last=False)
    sampler.set_epoch(2)
    expected = list(sampler)
    uploads = []
    original_to = Tensor.to

    def counted_to(self, *args, **kwargs):
        uploads.append(tuple(self.shape))
        return original_to(self, *args, **kwargs)

    sampler.set_epoch(2)  # Lightning sets the epoch before each one
    epoch = list(batches)  # the order is drawn on the host once per epoch
    got = []
    monkeypatch.setattr(Tensor, "to", counted_to)
    monkeypatch.setattr(torch, "as_tensor", lambda *a, **k: (_ for _ in ()).throw(AssertionError("a per-batch list")))
    for batch in epoch:
        assert isinstance(batch, DeviceBatch)
        x, y = dataset.__getitems__(batch)
        got += y.tolist()
        assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), y)
    monkeypatch.undo()
    assert got == expected and [len(b) for b in epoch] == [4, 4, 2]
    assert uploads == [(10,)]  # one upload of the whole order, shared by the epoch's batches
    sampler.set_epoch(3)
    assert [int(i) for b in batches for i in b.rows(torch.device("cpu"))] != expected  # another epoch, another order


@pytest.mark.slow  # ten methods, two steps each: `make test-all` runs it
def test_sync_check_counts_each_methods_deliberate_reads():
    """``python -m batlit.sync_check`` (a step of scripts/gpu_bench.sh): on the CPU the deliberate
    reads only; BAT's compaction reads once per attack step until every sample is fixed."""
    from batlit.tools.sync_check import K as STEPS
    from batlit.tools.sync_check import run

    found = run("cpu", batch=8, size=8)["methods"]
    assert 1 <= found["bat"]["batlit.sync"].get("nonzero_rows", 0) <= STEPS
    for name, entry in found.items():
        if name != "bat":
            assert entry["batlit.sync"] == {}, (name, entry)
        assert "cuda" not in entry
