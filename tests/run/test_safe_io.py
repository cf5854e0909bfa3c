"""batlit.safe_io: outputs replace links instead of following them; inputs are bounded regular files."""

import os

import pytest

from batlit.safe_io import (UnsafeFileError, atomic_write_text, check_out_dir, read_regular_bytes,
                            read_regular_text)


def test_write_replaces_a_link_and_leaves_its_target(tmp_path):
    target = tmp_path / "secret"
    target.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_clean.csv").symlink_to(target)
    atomic_write_text(run / "eval_clean.csv", "class,n\n")
    assert target.read_text() == "keep me"
    assert not (run / "eval_clean.csv").is_symlink()
    assert (run / "eval_clean.csv").read_text() == "class,n\n"
    assert sorted(p.name for p in run.iterdir()) == ["eval_clean.csv"]  # no temporary file left


def test_out_dir_that_is_a_link_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "analysis").symlink_to(elsewhere)
    with pytest.raises(UnsafeFileError, match="analysis: output folder is a symbolic link"):
        check_out_dir(run / "analysis", inside=run)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        check_out_dir(run / "analysis" / "plots", inside=run)
    with pytest.raises(UnsafeFileError, match="not inside"):
        check_out_dir(tmp_path / "other", inside=run)
    assert list(elsewhere.iterdir()) == []
    assert check_out_dir(run / "report", inside=run).is_dir()


def test_reads_only_bounded_regular_files_inside(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("token")
    (run / "config.yaml").symlink_to(secret)
    with pytest.raises(UnsafeFileError, match="config.yaml"):
        read_regular_text(run / "config.yaml", inside=run)
    os.mkfifo(run / "metrics.json")
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        read_regular_bytes(run / "metrics.json", inside=run)  # a FIFO would block a plain open
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        read_regular_bytes("/dev/zero")
    (run / "big.json").write_bytes(b"0" * 101)
    with pytest.raises(UnsafeFileError, match="101 bytes, more than the 100"):
        read_regular_bytes(run / "big.json", inside=run, max_bytes=100)
    (run / "ok.json").write_text("{}")
    assert read_regular_text(run / "ok.json", inside=run) == "{}"
    with pytest.raises(UnsafeFileError, match="outside"):
        read_regular_text(secret, inside=run)
