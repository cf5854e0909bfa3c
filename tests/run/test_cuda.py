"""CUDA-only checks (skipped without a GPU): device-agnostic attacks, host syncs, GPU training.

Run on a GPU machine by scripts/gpu_bench.sh.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from batlit.attacks import boundary_pgd, pgd
from batlit.methods import BAT, PGDAT, TRADES, Standard
from batlit.models import resnet18, small_cnn

from conftest import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
ATTACK = {"eps": 8 / 255, "train": {"steps": 5, "step_size": 2 / 255},
          "val": {"steps": 2, "step_size": 2 / 255}, "test": {"steps": 2, "step_size": 2 / 255}}


def _batch(n=64, device="cuda"):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)


def _count_syncs(fn):
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return out, sum("synchroniz" in str(w.message) for w in caught)


def test_pgd_has_no_host_sync_and_stays_on_device():
    model = small_cnn(10).cuda().eval()
    x, y = _batch()
    x_adv, syncs = _count_syncs(lambda: pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=10))
    assert syncs == 0
    assert x_adv.device.type == "cuda" and (x_adv - x).abs().max() <= 8 / 255 + 1e-6


@pytest.mark.parametrize("compact,early_exit,max_syncs", [(True, True, 10), (False, True, 10), (False, False, 0)])
def test_boundary_pgd_host_syncs_and_cpu_agreement(compact, early_exit, max_syncs):
    torch.manual_seed(0)
    model = small_cnn(10).eval().double()
    x, y = _batch(device="cpu")
    x = x.double()
    kw = dict(eps=8 / 255, step_size=2 / 255, steps=10, init_std=0.0, loss="ce")
    ref = boundary_pgd(model, x, y, **kw)
    model_gpu, x_gpu, y_gpu = model.cuda(), x.cuda(), y.cuda()
    out, syncs = _count_syncs(lambda: boundary_pgd(model_gpu, x_gpu, y_gpu, compact=compact,
                                                   early_exit=early_exit, **kw))
    assert syncs <= max_syncs
    assert torch.equal(out.steps.cpu(), ref.steps)
    torch.testing.assert_close(out.first_adv.cpu(), ref.first_adv)
    torch.testing.assert_close(out.last_clean.cpu(), ref.last_clean)


@pytest.mark.parametrize("cls", [Standard, PGDAT, TRADES, BAT])
@pytest.mark.parametrize("bf16", [False, True])
def test_training_step_on_gpu_is_finite(cls, bf16):
    model = resnet18(10).cuda().to(memory_format=torch.channels_last)
    method = cls(model, attack=ATTACK, optimizer={"name": "sgd", "lr": 0.1}).cuda()
    x, y = _batch()
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss = method.objective(x, y, method.perturb(x, y))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_train_cli_on_gpu(tmp_path):
    record = train(tmp_path, "trainer=gpu", "method=bat", *[
        "data=synthetic", "model=small_cnn", "epochs=1", "attack.train.steps=2", "attack.val.steps=2",
        "attack.test.steps=2", "trainer.enable_progress_bar=false"], tiny=False)
    assert record["method"] == "bat" and 0 <= record["rob_avg"] <= 1


def test_data_on_device_gathers_batches_on_the_gpu():
    from types import SimpleNamespace

    from batlit.data import SyntheticDataModule

    dm = SyntheticDataModule(n_train=64, n_test=32, image_size=8, batch_size=16, num_workers=2, on_device=True)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), training=True)
    loader = dm.train_dataloader()
    x, y = next(iter(loader))
    assert x.device.type == "cuda" and y.device.type == "cuda" and loader.num_workers == 0
    assert dm.train_dataloader().dataset.images is loader.dataset.images  # copied once


def test_train_with_the_gpu_fast_paths_records_them(tmp_path):
    record = train(tmp_path, "trainer=gpu", "method=bat", *[
        "data=synthetic", "model=small_cnn", "epochs=1", "attack.train.steps=2", "attack.val.steps=2",
        "attack.test.steps=2", "trainer.enable_progress_bar=false"], tiny=False)
    assert record["fast_paths"] == {"precision": "bf16-mixed", "channels_last": True, "fold_batchnorm": True,
                                    "on_device": True, "compile": False}
