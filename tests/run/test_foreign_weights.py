"""batlit.evaluate / batlit.analyze on weights trained elsewhere (batlit.checkpoint.weights).

Each accepted layout is made from a batlit model's own weights, renamed the way another code base
saves them, and must give the same logits; each refusal is one ConfigError line before anything
is written. The real third-party model is pyautoattack's example ResNet-18 (standard training),
read from the installed package, on the shared CIFAR-10 JPEGs."""

from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from batlit.config import ConfigError
from batlit.checkpoint.weights import audit_config, fit_error, load_weights, match_keys, normalization_of

from conftest import ROOT, run_cli


def _model_test_pt() -> Path:
    pyautoattack = pytest.importorskip("pyautoattack")
    path = Path(pyautoattack.__file__).parent / "examples" / "model_test.pt"
    if not path.is_file():
        pytest.skip(f"pyautoattack ships no examples/model_test.pt at {path}")
    return path


def _small(model: str = "small_cnn", data: str = "digits", normalization="none", **arch):
    """An audit config and a seeded batlit model of it (the weights another code base would save)."""
    config = audit_config(model, data, normalization, seed=0)
    for key, value in arch.items():
        config.model[key] = value
    from batlit.checkpoint.store import build_model

    torch.manual_seed(0)
    net = build_model(config).eval()
    for m in net.modules():  # BatchNorm statistics that differ from the defaults, so a lost buffer shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return config, net


def _same_logits(a: torch.nn.Module, b: torch.nn.Module, shape) -> None:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


def _weights_only(net) -> dict:
    return {k: v for k, v in net.state_dict().items() if not k.startswith("normalize.")}


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "net", "model_state_dict", "last_state_dict",
                                    "module_prefix", "ddp_in_state_dict", "model_prefix", "legacy_format"])
def test_each_layout_loads_to_the_same_logits(tmp_path, layout):
    config, net = _small()
    sd = _weights_only(net)
    module = {f"module.{k}": v for k, v in sd.items()}
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 7, "best_acc": 51.2}, "model": {"model": sd},
           "net": {"net": sd, "acc": 0.5}, "model_state_dict": {"model_state_dict": sd, "optimizer_state_dict": {}},
           "last_state_dict": {"last": {"state_dict": sd}, "best": {}}, "module_prefix": module,
           "ddp_in_state_dict": {"state_dict": module}, "model_prefix": {f"model.{k}": v for k, v in sd.items()},
           "legacy_format": sd}[layout]
    path = tmp_path / "w.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=layout != "legacy_format")
    loaded = load_weights(path, config)
    _same_logits(loaded, net, (4, 1, 8, 8))


def _robustbench_wrn(sd: dict) -> dict:
    """batlit's WideResNet keys as RobustBench's (the TRADES code) name them, with the sub_block1
    that RobustBench's WideResNet(sub_block1=True) holds and never runs."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^(block\d)\.(\d+)\.", r"\1.layer.\2.", k).replace(".conv_shortcut.", ".convShortcut.")
        out[k] = v
        if k.startswith("block1."):
            out["sub_block1." + k[len("block1."):]] = torch.randn_like(v.float()).to(v.dtype)
    return out


def test_robustbench_wide_resnet_names_map_to_batlit_ones():
    from batlit.models.wide_resnet import WideResNet

    torch.manual_seed(0)
    net = WideResNet(10, 1, num_classes=10).eval()  # the WRN-28-10 code at depth 10, width 1: same names
    theirs = {f"module.{k}": v for k, v in _robustbench_wrn(net.state_dict()).items()}
    assert "block1.layer.0.convShortcut.weight" not in net.state_dict()
    assert any(".layer." in k for k in theirs) and any(k.startswith("module.sub_block1.") for k in theirs)
    expected = {k: v.shape for k, v in net.state_dict().items()}
    mapped = match_keys(theirs, "batlit.models.wrn28_10", expected)
    assert fit_error(mapped, expected) is None
    copy = WideResNet(10, 1, num_classes=10)
    copy.load_state_dict(mapped)
    _same_logits(copy, net, (2, 3, 32, 32))
    # and the full WRN-28-10 and WRN-34-10 key sets, on the meta device
    from batlit.models import wrn28_10, wrn34_10

    for factory in (wrn28_10, wrn34_10):
        with torch.device("meta"):
            full = factory().state_dict()
        shapes = {k: v.shape for k, v in full.items()}
        target = f"batlit.models.{factory.__name__}"
        assert fit_error(match_keys(_robustbench_wrn(full), target, shapes), shapes) is None
        assert fit_error(match_keys(_robustbench_wrn(full), "batlit.models.resnet18", shapes), shapes) is not None


def test_robustbench_preact_resnet_names_map_to_batlit_ones(tmp_path):
    config, net = _small("preact_resnet18", "synthetic", width=8)
    theirs = {k.replace(".shortcut.", ".shortcut.0."): v for k, v in _weights_only(net).items()}
    assert any(".shortcut.0." in k for k in theirs)
    torch.save({"state_dict": theirs}, tmp_path / "preact.pt")
    _same_logits(load_weights(tmp_path / "preact.pt", config), net, (2, 3, 32, 32))


def test_normalization_is_the_setting_and_a_stored_one_must_agree(tmp_path):
    config, net = _small(normalization="none")
    torch.save(_weights_only(net), tmp_path / "w.pt")
    norm = normalization_of({"mean": [0.5], "std": [0.25]})
    assert norm == {"name": "custom", "mean": [0.5], "std": [0.25]}
    config_n = audit_config("small_cnn", "digits", {"mean": [0.5], "std": [0.25]}, seed=0)
    loaded = load_weights(tmp_path / "w.pt", config_n)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():  # the normalized model sees (x - 0.5) / 0.25 where the plain one sees x
        assert torch.allclose(loaded(x), net((x - 0.5) / 0.25), atol=1e-5)
    # a file carrying normalize.mean/std: used when they agree, refused when not
    sd = {**_weights_only(net), "normalize.mean": torch.tensor([0.5]).view(1, 1, 1, 1),
          "normalize.std": torch.tensor([0.25]).view(1, 1, 1, 1)}
    torch.save(sd, tmp_path / "n.pt")
    load_weights(tmp_path / "n.pt", config_n)
    with pytest.raises(ConfigError, match=r"unexpected key 'normalize.mean' \(the file carries its own input norm"):
        load_weights(tmp_path / "n.pt", config)
    config_other = audit_config("small_cnn", "digits", {"mean": [0.1], "std": [0.25]}, seed=0)
    with pytest.raises(ConfigError, match=r"stores normalize.mean=\[0.5\].*set normalization= to match"):
        load_weights(tmp_path / "n.pt", config_other)
    for bad in ("cifar11", {"mean": [0.5]}, {"mean": [0.5], "std": [0.0]}, {"mean": [0.5, 0.5], "std": [1.0]}):
        with pytest.raises(ConfigError, match="normalization must be one of none, cifar10"):
            normalization_of(bad)
    with pytest.raises(ConfigError, match="normalization: 3 channels, data=digits has 1"):
        audit_config("small_cnn", "digits", "cifar10", seed=0)
    with pytest.raises(ConfigError, match=r"model: weights= needs model=<preact_resnet18\|resnet18\|small_cnn"):
        audit_config("resnet50", "digits", "none", seed=0)
    with pytest.raises(ConfigError, match=r"data: weights= needs data=<"):
        audit_config("small_cnn", None, "none", seed=0)


def _legacy_bomb(path: Path) -> None:
    """torch's pre-1.6 format whose pickle declares a 2 GiB storage for a 1,234-float tensor
    (the storage bytes themselves say 1,234): torch.load would allocate the 2 GiB first."""
    torch.save({"w": torch.zeros(1234)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    small = b"M" + struct.pack("<H", 1234)  # BININT2 1234, the numel in the storage's persistent id
    assert data.count(small) >= 1
    path.write_bytes(data.replace(small, b"J" + struct.pack("<i", 2**29), 1))


class Foreign:  # a class a pickle can name: torch.save of it needs code to load
    def __init__(self) -> None:
        self.w = torch.zeros(3)


def _zip_bomb(path: Path) -> None:
    """The zip torch.save writes, its tensor member rewritten compressed: 64 MiB of zeros in a
    file of about 64 KiB, the shape of '10 MiB holding 2 GiB'."""
    torch.save({"w": torch.zeros(16 * 2**20)}, path)
    with zipfile.ZipFile(path) as zf:
        members = [(i, zf.read(i.filename)) for i in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in members:
            zf.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED if "data/" in info.filename
                        else zipfile.ZIP_STORED)
    assert path.stat().st_size < 2**20


REFUSALS = {
    "not a state dict": (lambda p: torch.save({"epoch": 3, "acc": 0.5, "note": "x"}, p),
                         r"holds no state dict of tensors .*found \['acc', 'epoch', 'note'\]"),
    "a list of tensors": (lambda p: torch.save([torch.zeros(2)], p), r"holds no state dict of tensors .*found list"),
    "another architecture": (lambda p: torch.save(_weights_only(_small("resnet18", "synthetic", width=8)[1]), p),
                             r"does not fit model=small_cnn: missing key 'features.0.0.weight'"),
    "a wrong shape": (lambda p: torch.save({**_weights_only(_small()[1]),
                                            "classifier.3.weight": torch.zeros(9, 128)}, p),
                      r"key 'classifier.3.weight' has shape \[9, 128\], the architecture's is \[10, "),
    "an unexpected key": (lambda p: torch.save({**_weights_only(_small()[1]), "head.bias": torch.zeros(3)}, p),
                          r"does not fit model=small_cnn: unexpected key 'head.bias'$"),
    "a pickle that needs code": (lambda p: torch.save({"state_dict": Foreign()}, p),
                                 r"not a file of plain tensors torch.load\(weights_only=True\) reads .*"
                                 r"(Unsupported global|test_audit.Foreign)"),
    "a whole pickled model": (lambda p: torch.save(_small()[1], p),
                              r"not a file of plain tensors torch.load\(weights_only=True\) reads"),
    "a zip bomb": (_zip_bomb, r"holds a compressed member 'w/data/0' .* refused before inflating it"),
    "a legacy-format bomb": (_legacy_bomb, r"declares 2147483648 bytes of tensors, more than the file's \d+; refused"),
    "not torch's format": (lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200)),
                           r"is not a file torch.save writes"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_wrong_file_is_refused_in_one_line(tmp_path, case):
    make, message = REFUSALS[case]
    path = tmp_path / "w.pt"
    make(path)
    config = audit_config("small_cnn", "digits", "none", seed=0)
    with pytest.raises(ConfigError) as err:
        load_weights(path, config)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"weights: '{path}'"), text
    assert re.search(message, text), text


def _compose(config_dir: Path, name: str, overrides: list[str], out: Path):
    from hydra import compose, initialize_config_dir

    from conftest import with_hydra_runtime

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    return with_hydra_runtime(cfg, out)


def test_a_refused_file_writes_nothing_and_a_good_one_is_evaluated_and_analyzed(tmp_path):
    """The CLI: one line, exit 2 and no output folder for a bomb (checked before Hydra creates it);
    then a small model from another code base (DataParallel prefix) through evaluate and analyze,
    every output written, the weights, architecture, data and normalization recorded."""
    from batlit import analyze, evaluate

    config, net = _small()
    torch.save({"state_dict": {f"module.{k}": v for k, v in _weights_only(net).items()}}, tmp_path / "mine.pt")
    _legacy_bomb(tmp_path / "bomb.pt")
    out = tmp_path / "audit"
    proc = run_cli("batlit.evaluate", f"weights={tmp_path / 'bomb.pt'}", "model=small_cnn", "data=digits",
                   f"out_dir={out}", "attack=clean")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr[-2000:]
    assert "declares 2147483648 bytes of tensors" in proc.stderr and not out.exists()
    common = [f"weights={tmp_path / 'mine.pt'}", "model=small_cnn", "data=digits", "progress_bar=false", "device=cpu"]
    cfg = _compose(ROOT / "conf" / "evaluate", "evaluate", [*common, f"ckpt={tmp_path / 'mine.pt'}"], out)
    with pytest.raises(ConfigError, match="not both"):
        evaluate.run(cfg)
    assert not out.exists()
    cfg = _compose(ROOT / "conf" / "evaluate", "evaluate", [*common, "normalization={mean:[0.1],std:[0.9]}",
                                                           f"out_dir={out}", "attack.steps=3", "n_samples=50"], out)
    evaluate.run(cfg)
    cfg = _compose(ROOT / "conf", "analyze", [*common, "n_samples=30", "source.steps=4", "target.steps=2",
                                              f"out_dir={out / 'analysis'}"], out / "analysis")
    analyze.run(cfg)
    for name in ("eval_pgd20.json", "eval_pgd20.csv", "eval_pgd20.npz", "analysis/analysis.json",
                 "analysis/confusion.png", "analysis/classwise.png", "analysis/survival.png"):
        assert (out / name).is_file(), name
    record = json.loads((out / "eval_pgd20.json").read_text())
    assert record["weights"] == str((tmp_path / "mine.pt").resolve()) and "ckpt" not in record
    assert (record["model"], record["data"]) == ("small_cnn", "digits")
    assert record["normalization"] == {"name": "custom", "mean": [0.1], "std": [0.9]}
    assert record["attack"]["eps"] == pytest.approx(8 / 255) and record["n_samples"] == 50
    assert record["components"][0]["name"] == "PGD-3 (ce)"
    assert record["class_names"][:3] == ["0", "1", "2"]
    analysis = json.loads((out / "analysis" / "analysis.json").read_text())
    assert (analysis["model"], analysis["data"], analysis["normalization"]["name"]) == ("small_cnn", "digits", "none")
    # batlit.report: the audited model beside a trained run, one row each, ρ against the chosen row
    from batlit import report

    trained = tmp_path / "runs" / "pgd_at"
    trained.mkdir(parents=True)
    numbers = {"std_avg": 0.2, "std_worst": 0.4, "bndy_avg": 0.3, "bndy_worst": 0.5, "rob_avg": 0.5, "rob_worst": 0.7}
    numbers.update({f"{k}_per_class": [v] * 10 for k, v in (("std", 0.2), ("bndy", 0.3), ("rob", 0.5))})
    (trained / "metrics.json").write_text(json.dumps({"method": "PGDAT", "seed": 0, "class_names": record["class_names"],
                                                      "count_per_class": [18] * 10, **numbers}))
    (trained / "config.yaml").write_text("seed: 0\nmethod:\n  _target_: batlit.methods.PGDAT\n")
    result = report.report([tmp_path / "runs", out], baseline=trained, out=tmp_path / "report", figures=False)
    rows = {r["method"]: r for r in result["records"]}
    assert set(rows) == {"PGDAT", "audit [audit: small_cnn]"}, list(rows)
    audit_row = rows["audit [audit: small_cnn]"]
    assert audit_row["rob_worst_mean"] == record["rob_worst"] and audit_row["seeds"] == 1
    assert audit_row["pgd20_rob_avg_mean"] == record["rob_avg"]  # its evaluation is also a column
    assert rows["PGDAT"]["rho_rob"] == pytest.approx(0.0)
    for m in ("std", "rob"):
        assert audit_row[f"rho_{m}"] == pytest.approx(report.rho(record[f"{m}_avg"], record[f"{m}_worst"],
                                                                 numbers[f"{m}_avg"], numbers[f"{m}_worst"]))
    n = record["count_per_class"][0]
    assert audit_row["rob_worst_class_n"] == min(record["count_per_class"]) and n >= 5
    assert audit_row["rob_worst_wilson_low"] <= record["rob_worst"] <= audit_row["rob_worst_wilson_high"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| audit [audit: small_cnn] | 1 |" in text and f"ρ against {trained}" in text
    # the evaluation saw the model the file holds, normalized as asked: the clean errors agree
    from batlit.checkpoint.store import datamodule_for

    dm = datamodule_for(config, test_subset=50, eval_seed=0)
    with torch.no_grad():
        pred = net((dm.test_x.float().div(255) - 0.1) / 0.9).argmax(1)
    assert record["std_avg"] == pytest.approx(float((pred != dm.test_y).float().mean()))


def test_the_shipped_model_clean_per_class(tmp_path, shared_cifar10_jpeg):
    """pyautoattack's example ResNet-18 (standard training; no input normalization: its eval.py
    feeds ToTensor() images to its ResNet18) loads into batlit's resnet18 and is about 83-86%
    accurate on 200 CIFAR-10 JPEG test images, 20 a class."""
    from batlit.evaluate import run

    record = run(_compose(ROOT / "conf" / "evaluate", "evaluate", [
        f"weights={_model_test_pt()}", "model=resnet18", "data=cifar10_jpeg", f"data_root={shared_cifar10_jpeg}",
        "n_samples=200", "attack=clean", f"out_dir={tmp_path}", "progress_bar=false", "device=cpu"], tmp_path))
    assert record["n_samples"] == 200 and record["count_per_class"] == [20] * 10
    assert 0.78 <= 1 - record["std_avg"] <= 0.90, record["std_avg"]
    assert max(record["std_per_class"]) > 1 - 0.78  # a standard model's worst class lags its average
    assert record["class_names"] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]


@pytest.mark.slow
def test_the_shipped_model_has_no_robustness_under_pgd10(tmp_path, shared_cifar10_jpeg):
    """The same model under PGD-10 at 8/255: 0% robust accuracy in every class, as a model without
    adversarial training must have (174 s on this project's 2-core Xeon CPU, shared with other tests)."""
    proc = run_cli("batlit.evaluate", f"weights={_model_test_pt()}", "model=resnet18", "data=cifar10_jpeg",
                   f"data_root={shared_cifar10_jpeg}", "n_samples=200", "attack=pgd20", "attack.steps=10",
                   f"out_dir={tmp_path}", "progress_bar=false", "device=cpu", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "eval_pgd20.json").read_text())
    assert record["components"][0]["name"] == "PGD-10 (ce)"
    assert record["attack"]["eps"] == pytest.approx(8 / 255)
    assert 0.78 <= 1 - record["std_avg"] <= 0.90
    assert record["rob_avg"] == 1.0 and record["rob_per_class"] == [1.0] * 10
