"""The fast paths are config switches, on by default only where a GPU is, and change
layouts or precision only — not what is learnt (compared on the CPU where it can run)."""

from __future__ import annotations

import math

import pytest
import torch

from batlit.config import cpu_has_bf16
from batlit.models import Normalize, preact_resnet18, resnet18, small_cnn, use_channels_last, wrn28_10

from conftest import train, train_multirun
from conftest import compose_config as _compose


@pytest.mark.parametrize("factory,kwargs", [(small_cnn, {"width": 8}), (resnet18, {"width": 8}),
                                            (preact_resnet18, {"width": 8}), (wrn28_10, {})])
def test_channels_last_gives_the_same_function_and_state_dict(factory, kwargs):
    torch.manual_seed(0)
    eager = factory(num_classes=10, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3, **kwargs).eval()
    fast = factory(num_classes=10, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3, channels_last=True, **kwargs).eval()
    fast.load_state_dict(eager.state_dict())  # same names: checkpoints load either way
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(m.channels_last for m in fast.modules() if isinstance(m, Normalize))
    layouts = []
    conv.register_forward_pre_hook(lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    out_eager = eager(x)
    (grad_eager,) = torch.autograd.grad(out_eager.sum(), x)
    out_fast = fast(x)
    (grad_fast,) = torch.autograd.grad(out_fast.sum(), x)
    assert layouts and all(layouts)  # the input really reached the first conv as NHWC
    assert torch.allclose(out_eager, out_fast, atol=1e-4)
    assert torch.allclose(grad_eager, grad_fast, atol=1e-4)


def test_use_channels_last_off_is_the_identity():
    model = small_cnn(num_classes=3, in_channels=1, width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_channels_last(model, False) is model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_fast_paths_default_on_where_bf16_is_fast(monkeypatch, gpu, cpu_bf16):
    """bf16 and channels_last where the run's device computes bf16 fast: a GPU, or a CPU with
    AMX / AVX512-BF16 (``batlit.config.hardware.cpu_has_bf16``); the data stays on the GPU only."""
    import batlit.config.hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100/H100
    monkeypatch.setattr(batlit.config.hardware, "cpu_has_bf16", lambda: cpu_bf16)
    cfg = _compose("data=cifar10", "model=resnet18")
    assert cfg.model.channels_last is (gpu or cpu_bf16)
    assert cfg.data.on_device is gpu
    assert cfg.trainer.precision == ("bf16-mixed" if gpu or cpu_bf16 else "32-true")
    assert cfg.compile is False  # off everywhere until measured on a GPU: docs/performance.md
    for cpu in (_compose("trainer=cpu"), _compose("trainer=ddp", "trainer.accelerator=cpu")):
        # a CPU run on a GPU machine gets the CPU's fast path, not the GPU's
        assert cpu.trainer.precision == ("bf16-mixed" if cpu_bf16 else "32-true")
        assert cpu.model.channels_last is cpu_bf16 and cpu.data.on_device is False


def test_cpu_bf16_detection_follows_torch_and_the_override(monkeypatch):
    from batlit.config import cpu_has_bf16

    monkeypatch.delenv("BATLIT_CPU_BF16", raising=False)
    for amx, avx512 in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512)
        assert cpu_has_bf16() is (amx or avx512)
        monkeypatch.setenv("BATLIT_CPU_BF16", "0")
        assert cpu_has_bf16() is False
        monkeypatch.setenv("BATLIT_CPU_BF16", "1")
        assert cpu_has_bf16() is True
        monkeypatch.delenv("BATLIT_CPU_BF16")


def _within_noise(record: dict, base: dict, key: str) -> bool:
    """|difference| within 3 binomial standard errors of the base error on this test set."""
    p, n = base[key], base["num_test_samples"]
    return abs(record[key] - base[key]) <= 3 * math.sqrt(max(p * (1 - p), 0.01) / n)


# BAT in `make test` where bf16 is in hardware (its KL attacks are the ones bf16 could weaken); where the
# CPU emulates bf16 (the fast path is not its default: fp32 is) the pair of trainings takes about 45 s,
# so there BAT joins PGD-AT in `make test-all`
_BF16_EMULATED = not cpu_has_bf16()


@pytest.mark.parametrize("method", [pytest.param("pgd_at", marks=pytest.mark.slow),
                                    pytest.param("bat", marks=[pytest.mark.slow] if _BF16_EMULATED else [])])
def test_the_fast_path_trains_to_the_fp32_metrics_within_noise(tmp_path, method):
    """bf16 + channels_last + folded BatchNorm in the attacks (the default where bf16 is fast) against
    fp32 with contiguous tensors and unfolded BatchNorm:
    the same seed ends within 3 binomial standard errors on 2,000 test images (±2-3 points), for a
    CE attack (PGD-AT) and a KL trajectory (BAT). A small constant lr keeps the two trainings on one
    path: at lr 0.05 two fp32 runs that differ in one early rounding already end further apart."""
    common = (f"method={method}", "epochs=3", "data.n_test=2000", "data.n_train=1024", "data.noise=0.5",
              "attack.eps=0.1", "attack.train.steps=3", "attack.train.step_size=0.04", "attack.test.steps=5",
              "attack.test.step_size=0.03", "optimizer.lr=0.01", "scheduler=constant")
    base = train(tmp_path / "fp32", *common, "trainer.precision=32-true", "model.channels_last=false",
                 "model.fold_batchnorm=false")
    fast = train(tmp_path / "fast", *common, "trainer.precision=bf16-mixed", "model.channels_last=true",
                 "model.fold_batchnorm=true")
    assert base["fast_paths"]["precision"] == "32-true" and fast["fast_paths"]["precision"] == "bf16-mixed"
    assert fast["fast_paths"]["channels_last"] and not base["fast_paths"]["channels_last"]
    assert fast["fast_paths"]["fold_batchnorm"] and not base["fast_paths"]["fold_batchnorm"]
    assert base["num_test_samples"] == 2000 and 0.05 < base["rob_avg"] < 0.95  # the attack has work to do
    for key in ("std_avg", "rob_avg"):
        assert _within_noise(fast, base, key), (method, key, fast[key], base[key])


@pytest.mark.slow
def test_compiled_model_trains_to_the_eager_metrics(tmp_path):
    records = train_multirun(tmp_path, "method=pgd_at", "compile=false,true")
    assert [r["fast_paths"]["compile"] for r in records] == [False, True]
    assert abs(records[0]["rob_avg"] - records[1]["rob_avg"]) <= 0.02


def test_data_on_device_is_a_no_op_on_the_cpu():
    from types import SimpleNamespace

    from batlit.data import SyntheticDataModule

    dm = SyntheticDataModule(n_train=64, n_test=32, image_size=8, batch_size=16, on_device=True)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), training=False)
    x, y = next(iter(dm.train_dataloader()))
    assert x.device.type == "cpu" and x.shape == (16, 3, 8, 8) and dm.train_dataloader().dataset.images is dm.train_x
