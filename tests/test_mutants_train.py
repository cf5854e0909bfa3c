"""batlit.train's resume choice, in-process (a gap found by scripts/mutants.py, docs/testing.md)."""

from __future__ import annotations

from omegaconf import OmegaConf

from batlit.train import resume_path


def test_resume_continues_from_last_ckpt_only_when_it_exists(tmp_path):
    cfg = OmegaConf.create({"resume": True, "ckpt_path": None})
    assert resume_path(cfg, tmp_path) is None  # nothing yet: start from scratch
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resume_path(cfg, tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    assert resume_path(OmegaConf.create({"resume": False, "ckpt_path": None}), tmp_path) is None
    assert resume_path(OmegaConf.create({"resume": False, "ckpt_path": "x.ckpt"}), tmp_path).name == "x.ckpt"
