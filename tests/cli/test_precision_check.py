"""``python -m batlit.precision_check``: the methods it builds run on the device given on
the command line, all of them (a BAT whose ``StepsToBoundary`` stayed on the CPU beside a GPU model
crashed the GPU run), and it measures a trained checkpoint as well as its probe."""

from __future__ import annotations

import json

import pytest
import torch

from batlit.tools import precision_check
from batlit.methods import BAT, PGDAT, TRADES
from batlit.models import small_cnn

from conftest import run_cli


def _devices(module: torch.nn.Module) -> dict[str, torch.device]:
    """Where every parameter, buffer and torchmetrics state of a module tree lives."""
    from torchmetrics import Metric

    found = {f"param {n}": p.device for n, p in module.named_parameters()}
    found.update({f"buffer {n}": b.device for n, b in module.named_buffers()})
    for name, sub in module.named_modules():
        if isinstance(sub, Metric):
            for state in sub._defaults:
                value = getattr(sub, state)
                for i, t in enumerate(value if isinstance(value, list) else [value]):
                    found[f"metric {name}.{state}[{i}]"] = t.device
    return found


@pytest.mark.parametrize("cls", [TRADES, BAT, PGDAT])
def test_every_module_and_metric_state_of_a_built_method_is_on_the_requested_device(cls):
    # the meta device stands in for a GPU: anything left behind stays on the CPU and shows
    built = precision_check.method(cls, small_cnn(num_classes=10, in_channels=3, width=4), "auto", device="meta")
    found = _devices(built)
    assert any(k.startswith("metric ") for k in found)  # the metrics are looked at, not only the model
    if cls is BAT:
        assert any("steps_to_boundary" in k for k in found)
    assert {k: d for k, d in found.items() if d.type != "meta"} == {}


def test_run_builds_every_method_on_the_device_it_was_given(monkeypatch):
    devices = []
    original = precision_check.method

    def spy(*args, **kwargs):
        devices.append(kwargs.get("device"))  # moved there whole (the test above)
        return original(*args, **kwargs)

    monkeypatch.setattr(precision_check, "method", spy)
    results = precision_check.run("cpu", n_test=32, repeats=1)
    assert len(devices) == 11 and all(d == "cpu" for d in devices)  # 4 modes for TRADES and BAT, 3 for PGD-AT
    assert results["model"] == "probe" and set(results["attacks"]) == {"trades", "bat", "pgd_at"}


def test_a_trained_checkpoint_is_measured_on_its_own_test_images_and_attack(hot_start, tmp_path):
    from batlit.checkpoint.store import datamodule_for, load_run

    ckpt = hot_start / "checkpoints" / "last.ckpt"
    results = precision_check.run("cpu", n_test=64, repeats=1, ckpt=ckpt)
    # the images it keeps are the checkpoint's own test images that its model classifies right
    run = load_run(ckpt)
    x, y = zip(*datamodule_for(run.config, test_subset=64, num_workers=0).test_dataloader())
    with torch.no_grad():
        right = int((run.model(torch.cat(x)).argmax(1) == torch.cat(y)).sum())
    assert results["n_images"] == right and results["model"] == str(ckpt)
    assert results["attack"]["eps"] == pytest.approx(float(run.config.attack.eps))
    assert results["attack"]["train"]["steps"] == int(run.config.attack.train.steps)
    assert results["attack"]["train"]["step_size"] == pytest.approx(float(run.config.attack.train.step_size))
    assert {"fp32", "bf16 attack"} <= set(results["attacks"]["bat"])

    out = tmp_path / "check.json"
    proc = run_cli("batlit.precision_check", "--device", "cpu", "--n-test", "32", "--repeats", "1",
                   "--ckpt", str(ckpt), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.read_text())["model"] == str(ckpt)


@pytest.mark.parametrize("args, says", [
    (["--ckpt", "no/such.ckpt"], "--ckpt: no checkpoint file at 'no/such.ckpt'"),
    (["--device", "nonsense"], "device: 'nonsense' is not a device"),
    (["--n-test", "0"], "--n-test and --repeats must be >= 1"),
])
def test_bad_arguments_are_one_line_before_any_work(args, says):
    proc = run_cli("batlit.precision_check", *args, timeout=120)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""  # nothing measured
