"""scripts/study_cifar10_gpu.sh starts on a fresh GPU machine (wheels
--no-deps into a scratch --target folder) and has a shortened mode, which does not fit one 10-minute
command and says so; checked here on the CPU with its dry run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT


def _study(env: dict[str, str], timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/study_cifar10_gpu.sh"], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_an_unknown_mode_is_one_line(tmp_path):
    proc = _study({"OUT": str(tmp_path), "MODE": "5min", "PYTHON": sys.executable})
    assert proc.returncode == 2 and proc.stderr.strip() == "MODE must be full or short, got '5min'"
    assert not (tmp_path / "protocol.txt").exists()


@pytest.mark.slow  # three short trainings, AutoAttack and the analysis: `make test-all` runs it
def test_the_short_mode_runs_its_methods_on_the_carried_jpegs_and_packs_no_checkpoint(tmp_path, shared_cifar10_jpeg):
    # no DATA_ROOT: the zips are found beside the checkout, as on a fresh machine
    packed = tmp_path / "packed"
    env = {"OUT": str(tmp_path / "study"), "MODE": "short", "BATLIT_DRY_RUN": "1", "PYTHON": sys.executable,
           "PACK_TO": str(packed)}
    proc = _study(env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in packed.iterdir()] == ["study_results.tar.gz"]  # one file where only $OUT comes back
    import tarfile

    with tarfile.open(packed / "study_results.tar.gz") as tar:
        names = tar.getnames()
    assert "./bat/seed0/metrics.json" in names and not any(n.endswith(".ckpt") for n in names)
    tmp_path = tmp_path / "study"
    trained = sorted(p.parent.parent.name for p in tmp_path.glob("*/seed0/metrics.json"))
    assert trained == ["bat", "pgd_at", "trades6"]
    config = yaml.safe_load((tmp_path / "bat" / "seed0" / "config.yaml").read_text())
    assert os.path.realpath(config["data"]["root"]) == os.path.realpath(shared_cifar10_jpeg)
    assert (tmp_path / "report" / "report.md").is_file()
    assert "fidelity=issue19" in (tmp_path / "protocol.txt").read_text()
