"""DDP on 2 CPU processes (gloo), the submitit launcher, SLURM auto-requeue from config."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from conftest import ROOT, TINY, run_cli


@pytest.mark.slow  # two DDP processes plus a one-process run: `make test-all` runs it
def test_ddp_two_cpu_processes_match_one_process_and_share_frl_state(tmp_path, hot_start):
    run_dir, dumps = tmp_path / "ddp", tmp_path / "dumps"
    # the rank-1 process Lightning launches imports the test callback too
    path = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)
    proc = run_cli("batlit.train", *TINY, "method=frl_rwrm", f"method.init_ckpt={hot_start / 'checkpoints' / 'last.ckpt'}",
                   "data.val_size=40", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                   "attack.test.init=none", "+callbacks.dump._target_=rank_state.DumpMethodState",
                   f"+callbacks.dump.out_dir={dumps}", f"hydra.run.dir={run_dir}", env={"PYTHONPATH": path})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0, rank1 = (torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    for key in ("lambda_nat", "lambda_bndy", "lambda_eps"):
        assert torch.equal(rank0[key], rank1[key]), key
    assert rank0["lambda_bndy"].abs().sum() > 0  # the multipliers really moved

    # the class-wise test metrics summed over the 2 processes equal one process evaluating everything
    from batlit.attacks import pgd
    from batlit.checkpoint.store import datamodule_for, load_run
    from batlit.metrics import ClassWiseRobustness

    record = json.loads((run_dir / "metrics.json").read_text())
    run = load_run(run_dir / "checkpoints" / "last.ckpt")
    spec = run.config.attack
    metric = ClassWiseRobustness(len(run.class_names))
    for x, y in datamodule_for(run.config).test_dataloader():
        x_adv = pgd(run.model, x, y, eps=spec.eps, step_size=spec.test.step_size, steps=spec.test.steps, init="none")
        with torch.no_grad():
            metric.update(run.model(x), run.model(x_adv), y)
    single = metric.compute()
    assert record["count_per_class"] == single["count_per_class"].tolist()
    for key in ("std_per_class", "bndy_per_class", "rob_per_class"):
        assert record[key] == pytest.approx(single[key].tolist(), abs=1e-7), key
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.equal(ckpt["state_dict"]["lambda_bndy"], rank0["lambda_bndy"])


@pytest.mark.slow  # two submitit jobs, each a fresh interpreter: `make test-all` runs it
def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path):
    proc = run_cli("batlit.train", "-m", *TINY, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                   "method=standard", "seed=0,1", f"hydra.sweep.dir={tmp_path}", timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seeds = sorted(json.loads((tmp_path / job / "metrics.json").read_text())["seed"] for job in ("0", "1"))
    assert seeds == [0, 1]
    assert list((tmp_path / ".submitit").iterdir())  # really went through submitit


def test_slurm_auto_requeue_comes_from_config(monkeypatch):
    from lightning.pytorch.plugins.environments import SLURMEnvironment
    from omegaconf import OmegaConf

    from batlit.train import trainer_plugins

    cfg = OmegaConf.create({"slurm": {"auto_requeue": False, "requeue_signal": "SIGUSR2"}})
    assert trainer_plugins(cfg, "io") == ["io"]  # outside SLURM: checkpoint I/O only
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "batlit")
    io, env = trainer_plugins(cfg, "io")
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False
    assert env.requeue_signal == signal.SIGUSR2
    _, env = trainer_plugins(OmegaConf.create({"slurm": {"auto_requeue": True, "requeue_signal": "SIGUSR1"}}), "io")
    assert env.auto_requeue is True and env.requeue_signal == signal.SIGUSR1
