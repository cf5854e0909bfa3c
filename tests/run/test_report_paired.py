"""batlit.report's paired statistics from per-image files and its worst-class Wilson intervals, on
hand-made run folders whose per-image outcomes are known (the files are written by the same code
batlit.evaluate uses)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from batlit import report as report_mod
from batlit.evaluate import _npz_bytes, per_image_arrays, subset_fingerprint
from batlit.report.stats import mcnemar_exact, paired_bootstrap

K, N = 2, 40
INDEX = np.arange(100, 100 + N)
LABELS = np.repeat([0, 1], N // 2)


def _fake_run(path, method, seed, robust, index=INDEX, eval_seed=0):
    """A run folder with metrics.json, config.yaml and an autoattack evaluation whose final
    predictions are right exactly where ``robust`` is true (clean predictions all right)."""
    path.mkdir(parents=True)
    label = torch.from_numpy(LABELS)
    adv = torch.where(torch.from_numpy(robust), label, 1 - label)
    per_class = [float(1 - robust[LABELS == c].mean()) for c in range(K)]
    summary = {"class_names": ["cat", "dog"], "count_per_class": [N // 2] * K}
    for key, errors in (("std", [0.0] * K), ("bndy", per_class), ("rob", per_class)):
        summary.update({f"{key}_per_class": errors, f"{key}_avg": float(np.mean(errors)), f"{key}_worst": max(errors),
                        f"{key}_worst_class": ["cat", "dog"][int(np.argmax(errors))]})
    (path / "metrics.json").write_text(json.dumps({"method": method, "seed": seed, **summary}))
    (path / "config.yaml").write_text(f"seed: {seed}\nmethod:\n  _target_: batlit.methods.{method}\n")
    fp = subset_fingerprint(index, LABELS, N, eval_seed)
    out = {"label": label, "clean_pred": label.clone(), "adv_pred": adv[None]}
    (path / "eval_autoattack.npz").write_bytes(_npz_bytes(**per_image_arrays(index, out, ["APGD-CE"], fp, K)))
    (path / "eval_autoattack.json").write_text(json.dumps({
        "attack": {"name": "autoattack"}, "n_samples": N, "per_image": "eval_autoattack.npz", "subset": fp,
        "components": [{"name": "APGD-CE"}], **summary}))


def _robust(rng, p):
    return rng.random(N) < p


def test_mcnemar_and_bootstrap_from_the_per_image_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a0, a1, b0 = _robust(rng, 0.7), _robust(rng, 0.7), _robust(rng, 0.3)
    _fake_run(tmp_path / "a0", "BAT", 0, a0)
    _fake_run(tmp_path / "a1", "BAT", 1, a1)
    _fake_run(tmp_path / "b0", "PGDAT", 0, b0)
    assert report_mod.main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "Paired comparisons on the same images" in printed and "McNemar" in printed
    (row,) = list(csv.DictReader((tmp_path / "out" / "paired.csv").open()))
    assert (row["a"], row["b"], row["images"], row["runs_a"], row["runs_b"]) == ("BAT", "PGDAT", str(N), "2", "1")
    # McNemar on the runs of the common seed 0, counted by hand
    only_a, only_b = int((a0 & ~b0).sum()), int((~a0 & b0).sum())
    seed, counts, p = row["mcnemar"].split(":")
    assert (seed, counts) == ("0/0", f"{only_a}/{only_b}")
    assert float(p) == pytest.approx(mcnemar_exact(only_a, only_b), rel=1e-5)
    # the bootstrap of the report is batlit.report.stats' on the same outcomes: BAT's two seeds against PGDAT
    expected = paired_bootstrap(np.stack([a0, a1]), b0[None], LABELS, K, draws=2000)
    for key in ("avg", "worst"):
        assert float(row[f"rob_{key}_acc_diff"]) == pytest.approx(expected[key]["diff"])
        assert float(row[f"rob_{key}_acc_diff_low"]) == pytest.approx(expected[key]["low"])
        assert float(row[f"rob_{key}_acc_diff_high"]) == pytest.approx(expected[key]["high"])
    per_class = lambda r: [r[LABELS == c].mean() for c in range(K)]  # noqa: E731
    assert expected["avg"]["diff"] == pytest.approx((np.mean(per_class(a0)) + np.mean(per_class(a1))) / 2
                                                    - np.mean(per_class(b0)))
    assert expected["worst"]["diff"] == pytest.approx((min(per_class(a0)) + min(per_class(a1))) / 2 - min(per_class(b0)))
    assert "| autoattack | BAT | PGDAT | 40 | 2/1 |" in (tmp_path / "out" / "report.md").read_text()


def test_worst_class_with_its_wilson_interval(tmp_path):
    robust = np.zeros(N, bool)
    robust[:15] = True   # cat: 15 of 20 robust, 5 errors; dog: 0 of 20, 20 errors -> dog is worst
    _fake_run(tmp_path / "r", "BAT", 0, robust)
    result = report_mod.report([tmp_path / "r"], out=tmp_path / "out", figures=False)
    rows = list(csv.DictReader((tmp_path / "out" / "worst_class.csv").open()))
    assert [(r["evaluation"], r["class"], r["n"], r["rob_errors"]) for r in rows] == [
        ("test split", "dog", "20", "20"), ("autoattack", "dog", "20", "20")]
    assert (float(rows[0]["wilson_low"]), float(rows[0]["wilson_high"])) == (pytest.approx(0.838875, abs=1e-6), 1.0)
    record = result["records"][0]
    assert record["autoattack_rob_worst_class_n"] == 20
    assert record["autoattack_rob_worst_wilson_low"] == pytest.approx(0.838875, abs=1e-6)
    assert "100.00 [83.89, 100.00] (dog, n=20)" in (tmp_path / "out" / "report.md").read_text()


def test_a_per_image_file_of_other_images_is_one_line(tmp_path, capsys):
    rng = np.random.default_rng(1)
    _fake_run(tmp_path / "a", "BAT", 0, _robust(rng, 0.5))
    _fake_run(tmp_path / "b", "PGDAT", 0, _robust(rng, 0.5), index=INDEX + 1, eval_seed=1)
    assert report_mod.main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "from different test images" in err
    assert str(tmp_path / "a" / "eval_autoattack.npz") in err and str(tmp_path / "b" / "eval_autoattack.npz") in err


def test_a_per_image_name_that_leaves_the_run_folder_is_refused(tmp_path, capsys):
    _fake_run(tmp_path / "a", "BAT", 0, np.ones(N, bool))
    record = json.loads((tmp_path / "a" / "eval_autoattack.json").read_text())
    (tmp_path / "a" / "eval_autoattack.json").write_text(json.dumps({**record, "per_image": "../x.npz"}))
    assert report_mod.main([str(tmp_path / "a"), "--out", str(tmp_path / "out"), "--no-figures"]) == 2
    assert "per_image='../x.npz'" in capsys.readouterr().err


def test_a_per_image_file_that_would_inflate_beyond_its_images_is_refused(tmp_path, capsys):
    """A small file whose arrays would inflate to far more than its JSON's 40 images need is refused
    before numpy inflates it."""
    import io

    _fake_run(tmp_path / "a", "BAT", 0, np.ones(N, bool))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, index=np.zeros(20_000_000, np.int8))  # 20 MB of zeros, a few kB on disk
    (tmp_path / "a" / "eval_autoattack.npz").write_bytes(buffer.getvalue())
    assert len(buffer.getvalue()) < 2**20
    assert report_mod.main([str(tmp_path / "a"), "--out", str(tmp_path / "out"), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "would inflate to 20000" in err
