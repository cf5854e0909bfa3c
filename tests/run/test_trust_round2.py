"""Trust, round 2 (docs/reliability.md "Trust"): what a checkpoint's callback state, a run
folder's links and a small file could still do.

Every hostile file here is crafted from the session's real run (``hot_start``: one tiny PGD-AT run,
trained once). Each test checks the one-line refusal naming the file and the key, and that nothing
outside the test's scratch folder was deleted, created or changed. Most call the entry points'
``run``/check functions in-process; the few that need Hydra's own writes or the exit status run the
CLI.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from hydra import compose, initialize_config_dir, initialize_config_module

from batlit.checkpoint.store import AtomicCheckpointIO, load_run
from batlit.config import ConfigError, register_resolvers
from conftest import ROOT, run_cli, with_hydra_runtime

register_resolvers()

TINY_TRAIN = ["data=synthetic", "model=small_cnn", "trainer=cpu", "method=pgd_at", "data.val_size=40",
              "attack.train.steps=2", "attack.val.steps=2", "attack.test.steps=2", "trainer.enable_progress_bar=false",
              "test=false", "estimate_cost=false", "logger=csv"]


def _snapshot(folder: Path) -> dict[str, Any]:
    """Every path below ``folder`` with its bytes (links by their target, not followed)."""
    out: dict[str, Any] = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        out[key] = ("link", os.readlink(p)) if p.is_symlink() else p.read_bytes() if p.is_file() else "<dir>"
    return out


def _craft(real: Path, dest: Path, change: Callable[[dict], Any]) -> Path:
    ckpt = copy.deepcopy(torch.load(real, weights_only=True))
    change(ckpt)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dest)
    return dest


def _model_checkpoint_state(ckpt: dict) -> dict:
    return next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))


def _train(out: Path, *overrides: str) -> None:
    from batlit import train

    with initialize_config_module(config_module="batlit.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*TINY_TRAIN, *overrides], return_hydra_config=True)
    out.mkdir(parents=True, exist_ok=True)  # as Hydra does before the job runs
    train.run(with_hydra_runtime(cfg, out))


@pytest.fixture
def real(hot_start: Path) -> Path:
    return hot_start / "checkpoints" / "last.ckpt"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder and a file that no batlit command here may touch."""
    folder = tmp_path / "victim"
    (folder / "inner").mkdir(parents=True)
    (folder / "inner" / "keep.txt").write_text("keep me\n")
    (tmp_path / "victim.txt").write_text("keep me too\n")
    return folder


# ---- Critical: resuming never deletes what this run did not write -----------------------------------------------

def test_resume_from_a_checkpoint_naming_a_local_url_deletes_nothing(real, victim, tmp_path):
    """Lightning took ``local://<folder>`` as a remote URL and removed the folder recursively."""
    bad = _craft(real, tmp_path / "evil.ckpt",
                 lambda c: _model_checkpoint_state(c).update(best_model_path=f"local://{victim}"))
    before = _snapshot(victim)
    _train(tmp_path / "out", f"ckpt_path={bad}", "epochs=2")
    assert _snapshot(victim) == before
    assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()  # the run itself went on


def test_resume_true_with_a_dot_dot_path_inside_the_checkpoints_folder_deletes_nothing(real, victim, tmp_path):
    """``<run>/checkpoints/../../victim.txt`` passed Lightning's textual same-folder check."""
    out = tmp_path / "out"

    def change(c: dict) -> None:
        _model_checkpoint_state(c).update(dirpath=str(out / "checkpoints"),
                                          best_model_path=str(out / "checkpoints" / ".." / ".." / "victim.txt"))
    _craft(real, out / "checkpoints" / "last.ckpt", change)
    _train(out, "resume=true", "epochs=2")
    assert (tmp_path / "victim.txt").read_text() == "keep me too\n"
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_checkpoint_io_removes_only_regular_files_inside_the_checkpoint_folder(tmp_path, victim):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "x.ckpt").write_text("x")
    (folder / "link.ckpt").symlink_to(tmp_path / "victim.txt")
    io = AtomicCheckpointIO(folder)
    before = _snapshot(tmp_path)
    for path in (f"local://{victim}", f"file://{victim}", str(victim), str(folder / ".." / ".." / "victim.txt"),
                 str(folder / "sub"), str(folder / "link.ckpt")):
        io.remove_checkpoint(path)
    assert _snapshot(tmp_path) == before
    (folder / "stale.ckpt").write_text("written by this run")
    io.remove_checkpoint(str(folder / "stale.ckpt"))  # what Lightning's top-k keeping does remove
    assert not (folder / "stale.ckpt").exists()
    AtomicCheckpointIO().remove_checkpoint(str(folder / "sub" / "x.ckpt"))  # no folder given: removes nothing
    assert (folder / "sub" / "x.ckpt").exists()


def test_stored_checkpoint_paths_outside_this_run_are_dropped_before_lightning_sees_them(tmp_path):
    from batlit.checkpoint.store import checked_callback_state

    folder = tmp_path / "checkpoints"
    own = {"best_model_path": str(folder / "last.ckpt"), "last_model_path": "", "kth_best_model_path": "",
           "best_k_models": {str(folder / "e1.ckpt"): 0.5}, "dirpath": str(folder)}
    kept = checked_callback_state({"callbacks": {"ModelCheckpoint{a}": dict(own), "Timer": {"time_elapsed": {}}}},
                                  folder)
    assert kept["callbacks"]["ModelCheckpoint{a}"] == own  # this run's own paths stay
    for field, value in (("best_model_path", "local:///home"), ("last_model_path", str(folder / ".." / "x")),
                         ("kth_best_model_path", "/etc/passwd"), ("best_k_models", {"s3://b/k": 1.0})):
        state = checked_callback_state({"callbacks": {"ModelCheckpoint{a}": {**own, field: value}}},
                                       folder)["callbacks"]["ModelCheckpoint{a}"]
        assert state["best_model_path"] == state["last_model_path"] == state["kth_best_model_path"] == "", field
        assert state["best_k_models"] == {}, field


# ---- High: writing and reading through links in a run folder ------------------------------------------------------

@pytest.fixture
def run_copy(hot_start: Path, tmp_path: Path) -> Path:
    """A copy of the real run folder, as one downloaded from elsewhere."""
    run = tmp_path / "run"
    shutil.copytree(hot_start, run, symlinks=True)
    shutil.rmtree(run / "analysis", ignore_errors=True)
    for p in run.glob("eval_*"):
        p.unlink()
    return run


def _evaluate(ckpt: Path, out: Path | None = None, *overrides: str) -> dict:
    from batlit import evaluate

    with initialize_config_dir(config_dir=str(ROOT / "conf" / "evaluate"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt={ckpt}", "n_samples=8", "progress_bar=false", "device=cpu",
                                             "attack=clean", *([f"out_dir={out}"] if out else []), *overrides],
                      return_hydra_config=True)
    return evaluate.run(with_hydra_runtime(cfg, out or ckpt.parent.parent))


def _analyze(ckpt: Path, *overrides: str) -> dict:
    from batlit import analyze

    with initialize_config_module(config_module="batlit.conf", version_base="1.3"):
        cfg = compose("analyze", overrides=[f"ckpt={ckpt}", "n_samples=8", "source.steps=2", "target.steps=1",
                                            "progress_bar=false", "device=cpu", *overrides])
    return analyze.run(cfg)


def test_evaluate_replaces_a_link_in_the_run_folder_and_never_writes_through_it(run_copy, victim, tmp_path):
    (run_copy / "eval_clean.csv").symlink_to(tmp_path / "victim.txt")
    (run_copy / "eval_clean.json").symlink_to(tmp_path / "victim.txt")
    _evaluate(run_copy / "checkpoints" / "last.ckpt")
    assert (tmp_path / "victim.txt").read_text() == "keep me too\n"
    for name in ("eval_clean.csv", "eval_clean.json"):
        assert not (run_copy / name).is_symlink() and (run_copy / name).stat().st_size > 0


def test_evaluate_and_analyze_refuse_an_output_folder_that_is_a_link(run_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_copy / "analysis").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=f"^{run_copy / 'analysis'}: output folder is a symbolic link"):
        _analyze(run_copy / "checkpoints" / "last.ckpt")
    (tmp_path / "out").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'out'}: output folder is a symbolic link"):
        _evaluate(run_copy / "checkpoints" / "last.ckpt", tmp_path / "out")
    assert not any(elsewhere.iterdir())


def test_analyze_cli_refuses_a_linked_analysis_folder_before_hydra_writes(run_copy, tmp_path):
    """Hydra writes .hydra/ and analyze.log before batlit's code runs: its callback refuses first."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_copy / "analysis").symlink_to(elsewhere)
    proc = run_cli("batlit.analyze", f"ckpt={run_copy / 'checkpoints' / 'last.ckpt'}", "n_samples=8")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"batlit: config error: {run_copy / 'analysis'}: output folder is a symbolic link; refusing to write through it"]
    assert not any(elsewhere.iterdir())


def test_hydra_job_log_and_config_files_that_are_links_are_refused(run_copy, victim, tmp_path):
    from batlit.config import refuse_linked_outputs

    out = run_copy / "analysis"
    (out / ".hydra").mkdir(parents=True)
    for name in ("analyze.log", ".hydra/config.yaml"):
        (out / name).symlink_to(tmp_path / "victim.txt")
        with pytest.raises(ConfigError, match=f"^{out / name}: is a link or not a regular file"):
            refuse_linked_outputs(out, "analyze", ".hydra")
        (out / name).unlink()
    os.mkfifo(out / "analyze.log")  # opening a FIFO for writing would block
    with pytest.raises(ConfigError, match="analyze.log: is a link or not a regular file"):
        refuse_linked_outputs(out, "analyze", ".hydra")
    (out / "analyze.log").unlink()
    refuse_linked_outputs(out, "analyze", ".hydra")  # a plain folder passes


def _report(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from batlit import report

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = report.main([*args, "--no-figures"])
    return code, out.getvalue(), err.getvalue()


def test_report_replaces_linked_outputs_and_refuses_a_linked_report_folder(run_copy, victim, tmp_path):
    (run_copy / "report").mkdir()
    for name in ("report.csv", "report.md"):
        (run_copy / "report" / name).symlink_to(tmp_path / "victim.txt")
    code, _, err = _report(str(run_copy))
    assert code == 0, err
    assert (tmp_path / "victim.txt").read_text() == "keep me too\n"
    assert not (run_copy / "report" / "report.csv").is_symlink()
    shutil.rmtree(run_copy / "report")
    (tmp_path / "elsewhere").mkdir()
    (run_copy / "report").symlink_to(tmp_path / "elsewhere")
    code, _, err = _report(str(run_copy))
    assert code == 2 and err.strip() == (f"batlit: config error: {run_copy / 'report'}: output folder is a symbolic "
                                         "link; refusing to write through it"), err
    assert not any((tmp_path / "elsewhere").iterdir())


def test_report_reads_only_regular_files_inside_the_run_folder(run_copy, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("seed: 'api-key-12345'\n")
    (run_copy / "config.yaml").unlink()
    (run_copy / "config.yaml").symlink_to(secret)
    code, out, err = _report(str(run_copy), "--out", str(tmp_path / "rep"))
    assert code == 2 and "api-key" not in out + err
    assert err.strip().startswith(f"batlit: config error: {run_copy / 'config.yaml'}: "), err
    assert len(err.strip().splitlines()) == 1


# ---- Medium: small files that exhaust CPU or memory ---------------------------------------------------------------

def test_a_stored_config_with_shared_references_is_refused_quickly(real, tmp_path):
    def bomb(c: dict) -> None:
        node: Any = ["x"]
        for _ in range(64):  # 2^64 paths when walked, a few KB pickled
            node = [node, node]
        c["hyper_parameters"]["run_config"]["notes"] = node
    bad = _craft(real, tmp_path / "bomb.ckpt", bomb)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^ckpt: '{bad}' stores a run config of more than 100000 values"):
        load_run(bad)
    assert time.perf_counter() - start < 10


def test_a_small_checkpoint_holding_a_deflated_large_tensor_is_refused_before_inflating(real, tmp_path):
    big = _craft(real, tmp_path / "big.ckpt", lambda c: c["state_dict"].update(pad=torch.zeros(2**24)))  # 64 MiB
    small = tmp_path / "small.ckpt"
    with zipfile.ZipFile(big) as zin, zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    big.unlink()
    assert small.stat().st_size < 4 * 2**20
    with pytest.raises(ConfigError, match=rf"^ckpt: '{small}' holds a compressed member '.*' \(\d+ bytes declaring "):
        load_run(small)


@pytest.mark.parametrize("change, key", [
    ({"n_train": 10**7}, "data.n_train=10000000"),
    ({"image_size": 50_000}, "data.image_size=50000"),
])
def test_stored_data_sizes_that_would_allocate_many_gib_are_refused(real, tmp_path, change, key):
    bad = _craft(real, tmp_path / "sizes.ckpt", lambda c: c["hyper_parameters"]["run_config"]["data"].update(change))
    with pytest.raises(ConfigError, match=rf"^ckpt: '{bad}' stores .*{key}"):
        load_run(bad)


def test_report_refuses_a_yaml_alias_bomb_and_a_metrics_json_that_is_a_device_or_fifo(run_copy, tmp_path):
    (run_copy / "config.yaml").write_text("a: &a [x, x, x, x, x, x, x, x, x]\n"
                                          + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                                                    for p, c in zip("abcdefgh", "bcdefghi")))
    start = time.perf_counter()
    code, _, err = _report(str(run_copy), "--out", str(tmp_path / "rep"))
    assert code == 2 and f"{run_copy / 'config.yaml'}: holds YAML anchors or aliases" in err, err
    (run_copy / "config.yaml").unlink()
    (run_copy / "metrics.json").unlink()
    (run_copy / "metrics.json").symlink_to("/dev/zero")
    code, _, err = _report(str(run_copy), "--out", str(tmp_path / "rep"))
    assert code == 2 and f"{run_copy / 'metrics.json'}: " in err, err
    (run_copy / "metrics.json").unlink()
    os.mkfifo(run_copy / "metrics.json")
    code, _, err = _report(str(run_copy), "--out", str(tmp_path / "rep"))
    assert code == 2 and f"{run_copy / 'metrics.json'}: not a regular file" in err, err
    assert time.perf_counter() - start < 10


# ---- Low: one line instead of a traceback -------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda rc: rc["data"].update(crop_padding=-1), "data.crop_padding must be an integer >= 0 or null, got -1"),
    (lambda rc: rc["data"].update(noise="???"), "stores data.noise='???', a value that was never set"),
])
def test_a_stored_value_the_data_module_refuses_or_a_missing_value_is_one_line(real, tmp_path, change, message):
    bad = _craft(real, tmp_path / "bad.ckpt", lambda c: change(c["hyper_parameters"]["run_config"]))
    with pytest.raises(ConfigError) as err:
        load_run(bad)
    assert str(err.value).startswith(f"ckpt: '{bad}'") and message in str(err.value), str(err.value)


def test_evaluate_data_root_with_a_file_that_is_not_an_image_is_one_line(real, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def image_folder(c: dict) -> None:
        c["hyper_parameters"]["run_config"]["data"] = {
            "_target_": "batlit.data.ImageFolderDataModule", "root": "/nonexistent", "image_size": 16,
            "in_channels": 3, "num_classes": 10, "batch_size": 8, "val_size": 0, "seed": 0}
    bad = _craft(real, tmp_path / "run" / "checkpoints" / "last.ckpt", image_folder)
    data = tmp_path / "data"
    for split in ("train", "test"):
        for k in range(10):
            (data / split / f"c{k}").mkdir(parents=True)
            (data / split / f"c{k}" / "0.png").write_text("not an image")
    with pytest.raises(ConfigError, match=r"^data: not a decodable image: '.*0\.png'"):
        _evaluate(bad, None, f"+data_root={data}")


def test_class_names_are_text_in_figures_csv_and_terminals(real, tmp_path, capsys):
    names = ["$\\foo{$", "=HYPERLINK(\"http://x\",\"y\")", *[f"c{i}" for i in range(2, 10)]]
    bad = _craft(real, tmp_path / "run" / "checkpoints" / "last.ckpt", lambda c: c["batlit"].update(class_names=names))
    record = _analyze(bad)  # source.steps=2: once an IndexError
    assert (tmp_path / "run" / "analysis" / "confusion.png").stat().st_size > 0
    assert len(record["source"]["survival"]["steps"]) == 2
    _evaluate(bad)
    first_cells = [line.split(",")[0] for line in (tmp_path / "run" / "eval_clean.csv").read_text().splitlines()]
    assert first_cells[2].startswith("\"'=HYPERLINK(") or first_cells[2].startswith("'=HYPERLINK("), first_cells
    escape = _craft(real, tmp_path / "esc.ckpt", lambda c: c["batlit"].update(class_names=["\x1b]0;owned\x07", *names[1:]]))
    with pytest.raises(ConfigError, match=r"stores batlit.class_names\[0\]=.*no control or escape characters"):
        load_run(escape)


def test_report_prints_no_escape_sequences_from_a_run_folder(run_copy, tmp_path):
    import json

    metrics = json.loads((run_copy / "metrics.json").read_text())
    metrics["data"] = "\x1b[2J\x1b]0;owned\x07"
    (run_copy / "metrics.json").write_text(json.dumps(metrics))
    code, out, err = _report(str(run_copy), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    assert "\x1b" not in out and "\\x1b[2J" in out


def test_download_goes_to_data_root_or_the_project_data_folder_never_the_stored_root(real, tmp_path, monkeypatch):
    from omegaconf import open_dict

    from batlit.checkpoint.store import datamodule_for
    from batlit.config import DataUnavailableError
    from batlit.data import CIFAR10DataModule

    monkeypatch.setenv("BATLIT_ROOT", str(tmp_path / "project"))
    asked: list[str] = []

    def no_network(self) -> None:  # where the download would go, without a network
        asked.append(self.root)
        raise DataUnavailableError("offline")
    monkeypatch.setattr(CIFAR10DataModule, "_ensure_files", no_network)
    config = load_run(real).config.copy()
    with open_dict(config):
        config.data = {"_target_": "batlit.data.CIFAR10DataModule", "root": str(tmp_path / "chosen_by_checkpoint"),
                       "download": True, "batch_size": 8}
    for root in (None, str(tmp_path / "mine")):
        with pytest.raises(DataUnavailableError):
            datamodule_for(config, root=root, download=True)
    assert asked == [str(tmp_path / "project" / "data" / "cifar10"), str(tmp_path / "mine")]
    assert not (tmp_path / "chosen_by_checkpoint").exists()


def test_validate_refuses_on_the_command_line_what_the_data_module_would(tmp_path):
    from omegaconf import OmegaConf

    from batlit.config import validate

    for key, value, rule in (("crop_padding", -1, "an integer >= 0 or null"), ("image_size", 0, "an integer >= 1"),
                             ("val_size", -0.5, ">= 0")):
        with pytest.raises(ConfigError, match=rf"^data\.{key} must be {rule}"):
            validate(OmegaConf.create({"data": {key: value}}), check_paths=False)
    validate(OmegaConf.create({"data": {"crop_padding": None, "image_size": 32, "val_size": 0.1}}), check_paths=False)
