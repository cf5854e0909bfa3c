"""GPU readiness checked on the CPU: what a first real GPU run would trip on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from batlit.callbacks import EpochSeeding, epoch_seed
from batlit.models.small_cnn import AdaptiveAvgPool2x2


def test_metrics_record_the_device_the_run_trained_on_not_where_the_module_ended():
    """After trainer.test() Lightning moves the module back to the CPU: method.device said cpu for
    every GPU run, so fast_paths.on_device was always false. The strategy knows the device."""
    from omegaconf import OmegaConf

    from batlit.train import fast_paths

    cfg = OmegaConf.create({"model": {"channels_last": True, "fold_batchnorm": True}, "data": {"on_device": True},
                            "compile": False})
    gpu_run = SimpleNamespace(precision="bf16-mixed", strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    assert fast_paths(cfg, gpu_run) == {"precision": "bf16-mixed", "channels_last": True, "fold_batchnorm": True,
                                        "on_device": True, "compile": False}
    cpu_run = SimpleNamespace(precision="32-true", strategy=SimpleNamespace(root_device=torch.device("cpu")))
    assert fast_paths(cfg, cpu_run)["on_device"] is False  # data.on_device is a no-op on the CPU


def test_on_device_is_false_in_the_metrics_when_a_split_stayed_in_host_memory(monkeypatch):
    """A split too large for the GPU stays on the host (with a warning); metrics.json said
    on_device=true all the same."""
    from omegaconf import OmegaConf

    import batlit.data.base as base
    from batlit.data import SyntheticDataModule
    from batlit.train import fast_paths

    cfg = OmegaConf.create({"model": {}, "data": {"on_device": True}, "compile": False})
    gpu_run = SimpleNamespace(precision="bf16-mixed", strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    dm = SyntheticDataModule(n_train=32, n_test=16, image_size=8, on_device=True)
    dm.trainer = gpu_run
    dm.setup()
    assert fast_paths(cfg, gpu_run, dm)["on_device"] is True  # nothing has fallen back yet
    monkeypatch.setattr(base, "fits_on_device", lambda nbytes, device, share=0.25: False)
    with pytest.warns(UserWarning, match="stays in host memory"):
        loader = dm.train_dataloader()
    assert next(iter(loader))[0].device.type == "cpu"
    assert fast_paths(cfg, gpu_run, dm)["on_device"] is False


@pytest.mark.parametrize("h,w", [(1, 1), (2, 2), (3, 3), (4, 4), (5, 7), (8, 8), (9, 4), (16, 16)])
def test_small_cnn_pool_is_adaptive_average_pooling_with_a_matmul_backward(h, w):
    x = torch.randn(3, 4, h, w, requires_grad=True)
    ours, ref = AdaptiveAvgPool2x2()(x), torch.nn.AdaptiveAvgPool2d(2)(x)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(g_ours, g_ref, atol=1e-6)
    if h % 2 == 0 and w % 2 == 0:  # a channels_last gradient stays channels_last (ReLU's backward is slow otherwise)
        x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        (g_cl,) = torch.autograd.grad(AdaptiveAvgPool2x2()(x_cl).square().sum(), x_cl)
        assert g_cl.is_contiguous(memory_format=torch.channels_last) and torch.allclose(g_cl, g_ref, atol=1e-6)


def test_small_cnn_runs_with_deterministic_algorithms_and_keeps_its_state_dict_keys():
    from batlit.models import small_cnn

    model = small_cnn(num_classes=3, in_channels=1, width=4)
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.modules())
    assert all(not k.startswith("features.5") for k in model.state_dict())  # the pool holds nothing
    torch.use_deterministic_algorithms(True)
    try:
        x = torch.rand(2, 1, 8, 8, requires_grad=True)
        torch.autograd.grad(model(x).sum(), x)
    finally:
        torch.use_deterministic_algorithms(False)


def test_ddp_ranks_draw_different_streams_and_each_rank_repeats_its_own():
    def draws(rank: int, epoch: int = 3) -> torch.Tensor:
        EpochSeeding(7).on_train_epoch_start(SimpleNamespace(current_epoch=epoch, global_rank=rank), None)
        return torch.rand(4)

    assert not torch.equal(draws(0), draws(1))  # crops, flips and attack noise differ between shards
    assert torch.equal(draws(1), draws(1))  # a function of (seed, epoch, rank): resume stays exact
    assert epoch_seed(7, 3) == epoch_seed(7, 3, 0) == (7 * 1_000_003 + 3 * 7_919 + 17) % (2**31 - 1)


@pytest.mark.parametrize("bf16, capability, expected", [
    (True, (8, 0), "bf16-mixed"),   # A100, H100
    (False, (7, 0), "16-mixed"),    # V100: fp16 tensor cores, no bf16
    (False, (7, 5), "16-mixed"),    # T4
    (False, (6, 1), "32-true"),     # P40: neither
])
def test_gpu_precision_follows_what_the_card_computes_fast(monkeypatch, bf16, capability, expected):
    from conftest import compose_config as _compose

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert _compose("trainer=gpu").trainer.precision == expected


def test_class_counts_need_no_host_sync(monkeypatch):
    """torch.bincount reads its input's max back to size its output: one host sync per call on a
    GPU (per BAT training step in StepsToBoundary, per evaluation batch). The counts are
    scatter_add_ into fixed-size states instead; bincount may not be called at all."""
    from batlit.metrics import ClassWiseRobustness
    from batlit.metrics.steps import StepsToBoundary

    def no_bincount(*args, **kwargs):
        raise AssertionError("torch.bincount syncs with the host on a GPU")

    monkeypatch.setattr(torch, "bincount", no_bincount)
    target = torch.tensor([0, 2, 2, 1, 2])
    metric = ClassWiseRobustness(3)
    metric.update(torch.tensor([0, 1, 2, 1, 2]), torch.tensor([1, 1, 0, 1, 2]), target)
    assert metric.total.tolist() == [1, 1, 3] and metric.std_errors.tolist() == [0, 0, 1]
    assert metric.bndy_errors.tolist() == [1, 0, 1]  # class 0: right then flipped; class 2: one of two right ones
    steps = StepsToBoundary(3, max_steps=10)
    steps.update(torch.tensor([3, 10, 4, 0, 10]), target)
    assert steps.total.tolist() == [1, 1, 3] and steps.never.tolist() == [0, 0, 2]


def test_a_split_too_large_for_the_gpu_stays_in_host_memory(monkeypatch):
    """data.on_device copied every split to the GPU whatever its size (a large image folder ran
    out of memory before the first step); now a split over a quarter of the free memory stays."""
    from batlit.data import SyntheticDataModule
    from batlit.data.base import fits_on_device

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 2**30, 80 * 2**30))
    gpu = torch.device("cuda", 0)
    assert fits_on_device(2**30, gpu) and not fits_on_device(2**30 + 1, gpu)
    assert fits_on_device(2**40, torch.device("cpu"))  # nothing to check on the CPU
    dm = SyntheticDataModule(n_train=64, n_test=32, image_size=8, batch_size=16, on_device=True)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=gpu), training=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 80 * 2**30))  # 1 kB free
    with pytest.warns(UserWarning, match="stays in host memory"):
        resident = dm._on_accelerator(dm.train_x)
    assert resident is dm.train_x and dm.on_device is False


def test_the_nonfinite_guard_reads_back_every_n_steps_and_at_epoch_end(tmp_path):
    """On a GPU the guard's per-step read-back stalled the queue: it records on the device and reads
    back every check_every steps (and at every epoch end, before the checkpoint), still naming the
    first bad step."""
    from batlit.callbacks import NonFiniteLossError, NonFiniteLossGuard

    guard = NonFiniteLossGuard(tmp_path, check_every=3)
    trainer = SimpleNamespace(global_step=0, current_epoch=2)

    def step(loss: float) -> None:
        guard.on_train_batch_start(trainer, None, None, trainer.global_step)
        guard.on_before_backward(trainer, None, torch.tensor(loss))
        trainer.global_step += 1

    step(1.0)              # step 0: read back (0 % 3 == 0), fine
    step(float("nan"))     # step 1: recorded, not read back yet
    step(2.0)              # step 2
    with pytest.raises(NonFiniteLossError, match=r"\(nan\) at epoch 2, step 1 \(batch 1 of the epoch\)"):
        step(float("inf"))  # step 3: read back; the first bad step is named, not this one
    guard = NonFiniteLossGuard(tmp_path, check_every=100)
    trainer.global_step = 1
    step(float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"\(inf\) at epoch 2, step 1"):
        guard.on_train_epoch_end(trainer, None)  # the epoch end reads back before the checkpoint
    cpu = NonFiniteLossGuard(tmp_path)  # on the CPU: every step, before the update
    trainer.global_step = 7
    with pytest.raises(NonFiniteLossError, match="step 7"):
        cpu.on_train_batch_start(trainer, None, None, 0)
        cpu.on_before_backward(trainer, None, torch.tensor(float("nan")))


def test_frl_s_remargined_attack_reads_nothing_back_to_the_host(monkeypatch):
    """FRL read eps.min() and margins.max() back to the host in every training step (two GPU
    stalls); its class-wise budgets are now checked on the device. Any read-back raises here."""
    from batlit.methods import FRL
    from batlit.models import small_cnn
    from batlit.tools.precision_check import ATTACK, OPTIMIZER

    frl = FRL(small_cnn(num_classes=3, in_channels=1, width=4), attack=ATTACK, optimizer=OPTIMIZER)
    frl.lambda_eps.copy_(torch.tensor([0.5, -0.2, 0.1]))  # unequal class-wise margins
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])

    def read_back(*args, **kwargs):
        raise AssertionError("a host read-back inside the training attack")

    for name in ("__float__", "__int__", "__bool__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, read_back)
    x_adv = frl.perturb(x, y)
    monkeypatch.undo()
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() > 0


@pytest.mark.parametrize("reader_has_bf16", [False, True])
def test_a_loaded_model_takes_the_reading_machine_s_layout(hot_start, tmp_path, monkeypatch, reader_has_bf16):
    """Checkpoints store the writer's resolved channels_last (true on a GPU); evaluating one on a CPU
    without bf16 built an NHWC model there. The layout now follows the machine that loads it."""
    import batlit.config.hardware
    from batlit.checkpoint.store import load_run

    ckpt = torch.load(hot_start / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["run_config"]["model"]["channels_last"] = not reader_has_bf16  # the writer's
    path = tmp_path / "written_elsewhere.ckpt"
    torch.save(ckpt, path)
    monkeypatch.setattr(batlit.config.hardware, "cpu_has_bf16", lambda: reader_has_bf16)
    model = load_run(path).model
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is reader_has_bf16
