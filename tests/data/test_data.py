"""Tests of batlit.data: splits, loaders, augmentation, image folders, caches and failure messages."""

from __future__ import annotations

import io
import os
import socket
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from batlit.data import (
    CIFAR10DataModule,
    DataUnavailableError,
    DigitsDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    ImagenetteDataModule,
    SyntheticDataModule,
)
from batlit.data import cifar as cifar_mod
from batlit.data import image_folder as image_folder_mod
from batlit.data.base import stratified_split

REPO = Path(__file__).resolve().parents[2]
CIFAR_JPEG = REPO / ".." / "shared" / "data" / "cifar10-jpeg"
CONF_DATA = REPO / "conf" / "data"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _private_cache_home(tmp_path, monkeypatch):
    # Default caches must never land in the real ~/.cache during tests.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _image_bytes(images: torch.Tensor) -> list[bytes]:
    return [bytes(img.numpy().tobytes()) for img in images]


# --------------------------------------------------------------------------------------------------
# Synthetic
# --------------------------------------------------------------------------------------------------


def test_synthetic_shapes_dtypes_and_loader():
    dm = SyntheticDataModule(image_size=16, n_train=200, n_test=100, batch_size=32, eval_batch_size=40)
    dm.setup()
    assert dm.train_x.shape == (200, 3, 16, 16) and dm.train_x.dtype == torch.uint8
    assert dm.train_y.dtype == torch.long and dm.test_x.shape == (100, 3, 16, 16)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 3, (16, 16))
    assert dm.class_names == [f"class{i}" for i in range(10)]

    sizes = []
    for x, y in dm.train_dataloader():  # a real DataLoader iteration through __getitems__
        assert x.dtype == torch.float32 and y.dtype == torch.long
        assert x.shape[1:] == (3, 16, 16) and x.shape[0] == y.shape[0]
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        sizes.append(len(y))
    assert sizes == [32] * 6 + [8]  # drop_last=False
    test_batches = list(dm.test_dataloader())
    assert [len(y) for _, y in test_batches] == [40, 40, 20]
    # The test loader is not shuffled and the conversion is exactly /255.
    assert torch.equal(test_batches[0][0], dm.test_x[:40].float() / 255)
    assert torch.equal(test_batches[0][1], dm.test_y[:40])
    assert dm.val_dataloader() == []


def test_synthetic_deterministic_per_seed_and_learnable():
    a, b, c = (SyntheticDataModule(image_size=8, n_train=100, n_test=50, seed=s) for s in (3, 3, 4))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.train_x, c.train_x)
    assert torch.equal(a.prototypes(), c.prototypes())  # same task for every seed
    # Nearest prototype classifies the noisy samples: the data is learnable.
    protos = a.prototypes().flatten(1)
    pred = torch.cdist(a.test_x.float().flatten(1) / 255, protos).argmin(1)
    assert (pred == a.test_y).float().mean() > 0.9
    # Balanced classes.
    assert torch.bincount(a.train_y).tolist() == [10] * 10


def test_val_split_stratified_disjoint_and_from_train():
    full = SyntheticDataModule(image_size=8, n_train=500, n_test=50)
    split = SyntheticDataModule(image_size=8, n_train=500, n_test=50, val_size=0.2)
    full.setup()
    split.setup()
    assert (len(split.train_y), len(split.val_y), len(split.test_y)) == (400, 100, 50)
    assert torch.bincount(split.val_y, minlength=10).tolist() == [10] * 10
    train_set, val_set = set(_image_bytes(split.train_x)), set(_image_bytes(split.val_x))
    assert not train_set & val_set
    assert train_set | val_set == set(_image_bytes(full.train_x))  # carved from train ...
    assert torch.equal(split.test_x, full.test_x)  # ... never from test
    x, y = next(iter(split.val_dataloader()))
    assert x.dtype == torch.float32 and len(y) == 100

    count = SyntheticDataModule(image_size=8, n_train=500, val_size=37)
    count.setup()
    assert len(count.val_y) == 37 and len(count.train_y) == 463
    assert count.describe()["val_size"] == 37


def test_subsets_are_stratified_and_seeded():
    dm = SyntheticDataModule(image_size=8, n_train=500, n_test=200, train_subset=50, test_subset=30, val_size=20)
    dm.setup()
    assert len(dm.train_y) == 50 and len(dm.test_y) == 30 and len(dm.val_y) == 20
    assert torch.bincount(dm.train_y, minlength=10).tolist() == [5] * 10
    assert torch.bincount(dm.test_y, minlength=10).tolist() == [3] * 10
    again = SyntheticDataModule(image_size=8, n_train=500, n_test=200, train_subset=50, test_subset=30, val_size=20)
    again.setup()
    assert torch.equal(dm.train_x, again.train_x) and torch.equal(dm.test_x, again.test_x)
    big = SyntheticDataModule(image_size=8, n_train=100, train_subset=10_000)  # larger than the data: all
    big.setup()
    assert len(big.train_y) == 100
    d = dm.describe()
    assert (d["train_size"], d["val_size"], d["test_size"], d["num_classes"]) == (50, 20, 30, 10)
    assert d["image_size"] == [8, 8] and d["name"] == "synthetic"


def test_stratified_split_exact_sizes_and_proportions():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    first, rest = stratified_split(labels, 10, torch.Generator().manual_seed(0))
    assert len(first) == 10 and len(rest) == 90
    assert torch.bincount(labels[first], minlength=3).tolist() == [5, 3, 2]
    assert sorted(torch.cat([first, rest]).tolist()) == list(range(100))
    first7, _ = stratified_split(labels, 7, torch.Generator().manual_seed(1))
    assert len(first7) == 7  # largest remainder keeps the total exact


# --------------------------------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------------------------------


def test_digits():
    dm = DigitsDataModule(val_size=0.1)
    dm.setup()
    assert len(dm.train_y) + len(dm.val_y) + len(dm.test_y) == 1797
    assert (len(dm.train_y), len(dm.val_y), len(dm.test_y)) == (1212, 135, 450)
    assert dm.train_x.shape[1:] == (1, 8, 8) and dm.train_x.dtype == torch.uint8
    assert (dm.in_channels, dm.image_size, dm.num_classes) == (1, (8, 8), 10)
    assert dm.class_names == [str(i) for i in range(10)]
    assert int(dm.train_x.max()) == 255 and int(dm.train_x.min()) == 0
    assert dm.augment_enabled is False
    # The train/test split is fixed whatever `seed` is; `seed` only moves the val split.
    other = DigitsDataModule(val_size=0.1, seed=5)
    other.setup()
    assert torch.equal(dm.test_x, other.test_x)
    assert not torch.equal(dm.val_x, other.val_x)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (128, 1, 8, 8)


def test_loader_with_worker_processes():
    # passthrough_collate and __getitems__ must also work across worker processes.
    dm = SyntheticDataModule(image_size=8, n_train=100, batch_size=25, num_workers=1)
    loader = dm.train_dataloader()
    assert loader.num_workers == 1
    batches = list(loader)
    assert [len(y) for _, y in batches] == [25] * 4
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape == (25, 3, 8, 8)


# --------------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------------


def _find_transform(out: torch.Tensor, padded: torch.Tensor, h: int, w: int):
    """All (oy, ox, flipped) whose crop of ``padded`` equals ``out`` (test-side brute force)."""
    found = []
    for oy in range(padded.shape[-2] - h + 1):
        for ox in range(padded.shape[-1] - w + 1):
            crop = padded[:, oy : oy + h, ox : ox + w]
            if torch.equal(out, crop):
                found.append((oy, ox, False))
            if torch.equal(out, crop.flip(-1)):
                found.append((oy, ox, True))
    return found


def test_augment_is_a_crop_and_flip_of_each_sample():
    torch.manual_seed(0)
    dm = SyntheticDataModule(crop_padding=2)
    assert dm.trainer is None  # works on a bare tensor, no trainer needed
    n, c, h, w = 64, 2, 5, 6
    x = torch.arange(1, n * c * h * w + 1, dtype=torch.float32).view(n, c, h, w)  # all values distinct
    out = dm.augment(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    transforms = []
    for i in range(n):
        found = _find_transform(out[i], padded[i], h, w)
        assert len(found) == 1, f"sample {i} is not exactly one crop/flip of its padded input"
        transforms.append(found[0])
    assert len({t[:2] for t in transforms}) > 5  # different samples get different offsets
    assert {t[2] for t in transforms} == {True, False}  # both flipped and unflipped samples
    assert (out == 0).any()  # zero padding shows up in off-centre crops

    torch.manual_seed(0)
    assert torch.equal(dm.augment(x), out)  # reproducible under the global seed


def test_augment_without_padding_only_flips_and_keeps_uint8():
    torch.manual_seed(1)
    dm = SyntheticDataModule(crop_padding=0)
    x = torch.randint(0, 256, (32, 3, 4, 4), dtype=torch.uint8)
    out = dm.augment(x)
    assert out.dtype == torch.uint8
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all()) and bool(same.any()) and bool(flipped.any())


def test_augment_only_in_training_via_hook():
    dm = SyntheticDataModule(crop_padding=4)
    x = torch.rand(16, 3, 8, 8)
    y = torch.arange(16)
    assert dm.on_after_batch_transfer((x, y), 0)[0] is x  # no trainer
    dm.trainer = SimpleNamespace(training=False)
    assert dm.on_after_batch_transfer((x, y), 0)[0] is x  # validating/testing
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    out, out_y = dm.on_after_batch_transfer((x, y), 0)
    assert out.shape == x.shape and not torch.equal(out, x) and out_y is y
    dm.augment_enabled = False
    assert dm.on_after_batch_transfer((x, y), 0)[0] is x


def test_lightning_fit_uses_loaders_and_augments_only_train_batches():
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

        test_step = validation_step

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    for val_size in (0, 32):
        dm = SyntheticDataModule(image_size=8, n_train=128, n_test=64, batch_size=32, val_size=val_size)
        calls = []
        original = dm.augment
        dm.augment = lambda x: (calls.append(x.shape[0]), original(x))[1]
        trainer = L.Trainer(
            accelerator="cpu",
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        L.seed_everything(0, verbose=False)
        trainer.fit(Tiny(), datamodule=dm)
        expected = 128 - val_size
        assert sum(calls) == expected  # every training sample, no val sample
        trainer.test(Tiny(), datamodule=dm, verbose=False)
        assert sum(calls) == expected  # no test batch augmented


# --------------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"batch_size": 0}, "data.batch_size"),
        ({"eval_batch_size": 0}, "data.eval_batch_size"),
        ({"num_workers": -1}, "data.num_workers"),
        ({"val_size": -0.1}, "data.val_size"),
        ({"val_size": 1.5}, "data.val_size"),
        ({"train_subset": 0}, "data.train_subset"),
        ({"test_subset": 0}, "data.test_subset"),
        ({"crop_padding": -1}, "data.crop_padding"),
        ({"seed": "x"}, "data.seed"),
    ],
)
def test_bad_values_name_the_config_key(kwargs, key):
    with pytest.raises(ValueError, match=key) as err:
        SyntheticDataModule(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(err.value)


def test_unknown_kwarg_is_a_type_error_but_config_only_keys_pass():
    with pytest.raises(TypeError, match="bogus"):
        DigitsDataModule(bogus=1)
    dm = DigitsDataModule(mean=None, std=None, in_channels=1, image_size=8, name="digits8")
    assert dm.name == "digits8"
    with pytest.raises(TypeError):
        ImageDataModule(root="x", nonsense=True)


def test_num_classes_and_shape_mismatch_name_the_key():
    with pytest.raises(ValueError, match="data.num_classes") as err:
        DigitsDataModule(num_classes=5).setup()
    assert "5" in str(err.value) and "10" in str(err.value)
    with pytest.raises(ValueError, match="data.in_channels"):
        DigitsDataModule(in_channels=3).setup()
    with pytest.raises(ValueError, match="data.image_size"):
        DigitsDataModule(image_size=32).setup()
    with pytest.raises(ValueError, match="data.val_size"):
        SyntheticDataModule(n_train=50, val_size=50).setup()


# --------------------------------------------------------------------------------------------------
# Image folders (tiny generated trees)
# --------------------------------------------------------------------------------------------------

CLASSES = ("cat", "dog", "emu")
COLORS = {"cat": (200, 10, 10), "dog": (10, 200, 10), "emu": (10, 10, 200)}


def _png(color, size=(6, 5)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _tree_entries(n_train=4, n_test=2, size=(6, 5), test_name="test") -> dict[str, bytes]:
    """Relative path -> file bytes of a 3-class tree; class is readable from the pixel colour."""
    entries = {}
    for split, n in (("train", n_train), (test_name, n_test)):
        for cls in CLASSES:
            for i in range(n):
                r, g, b = COLORS[cls]
                entries[f"{split}/{cls}/{i:03d}.png"] = _png((r, g, b + i), size)
    return entries


def _write_dir(root: Path, entries: dict[str, bytes]) -> Path:
    for rel, data in entries.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _write_zip(path: Path, entries: dict[str, bytes], dirs=()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for d in dirs:
            zf.writestr(d, b"")
        for rel, data in entries.items():
            zf.writestr(rel, data)
    return path


def _check_tiny(dm: ImageFolderDataModule, n_train=12, n_test=6, hw=(5, 6)):
    dm.setup()
    assert dm.class_names == list(CLASSES) and dm.num_classes == 3
    assert (len(dm.train_y), len(dm.test_y)) == (n_train, n_test)
    assert dm.train_x.dtype == torch.uint8 and dm.train_x.shape[1:] == (3, *hw)
    assert dm.image_size == hw and dm.in_channels == 3
    for x, y in ((dm.train_x, dm.train_y), (dm.test_x, dm.test_y)):
        red = x[:, 0, 0, 0].long()
        assert torch.equal(y, torch.where(red == 200, 0, torch.where(x[:, 1, 0, 0] == 200, 1, 2)))
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and len(y) == n_train


def test_image_folder_directory_layout(tmp_path, monkeypatch):
    root = _write_dir(tmp_path / "ds", _tree_entries())
    calls = []
    decode = image_folder_mod.decode_images
    monkeypatch.setattr(image_folder_mod, "decode_images", lambda *a, **k: (calls.append(1), decode(*a, **k))[1])
    dm = ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()  # decodes (and fills the cache) here; setup() reuses the result
    _check_tiny(dm)
    assert len(calls) == 2  # train and test, once each
    assert not list(root.rglob("*.npz"))  # nothing written into the data root


def test_image_folder_zip_layout(tmp_path):
    z = _write_zip(tmp_path / "ds.zip", _tree_entries(test_name="val"))
    _check_tiny(ImageFolderDataModule(root=str(z), cache_dir=str(tmp_path / "cache")))
    wrapped = {f"mydata/{k}": v for k, v in _tree_entries().items()}  # one wrapping folder
    z2 = _write_zip(tmp_path / "wrapped.zip", wrapped)
    _check_tiny(ImageFolderDataModule(root=str(z2), cache_dir=str(tmp_path / "cache")))


@pytest.mark.parametrize("test_zip", ["test.zip", "val.zip"])
def test_image_folder_dir_of_zips_layout(tmp_path, test_zip):
    entries = _tree_entries()
    root = tmp_path / "zips"
    # train.zip holds train/<class>/..., the test zip holds <class>/... directly.
    _write_zip(root / "train.zip", {k: v for k, v in entries.items() if k.startswith("train/")})
    _write_zip(root / test_zip, {k[len("test/") :]: v for k, v in entries.items() if k.startswith("test/")})
    _check_tiny(ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "cache")))


def test_image_folder_resize_grayscale_and_parallel_decode(tmp_path, monkeypatch):
    root = _write_dir(tmp_path / "ds", _tree_entries())
    dm = ImageFolderDataModule(root=str(root), image_size=4, in_channels=1, cache_dir=str(tmp_path / "c1"))
    dm.setup()
    assert dm.train_x.shape == (12, 1, 4, 4) and dm.in_channels == 1 and dm.image_size == (4, 4)

    serial = ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "c2"))
    serial.setup()
    monkeypatch.setattr(image_folder_mod, "_PARALLEL_MIN_IMAGES", 1)  # force the process pool
    monkeypatch.setattr(image_folder_mod, "_workers", lambda: 2)
    zipped = _write_zip(tmp_path / "ds.zip", _tree_entries())
    for src in (root, zipped):
        pooled = ImageFolderDataModule(root=str(src), cache_dir=str(tmp_path / "c3"))
        pooled.setup()
        assert torch.equal(pooled.train_x, serial.train_x) and torch.equal(pooled.test_y, serial.test_y)


def test_image_folder_mixed_sizes_need_image_size(tmp_path):
    entries = _tree_entries()
    entries["train/dog/odd.png"] = _png((10, 200, 10), size=(9, 9))
    root = _write_dir(tmp_path / "ds", entries)
    with pytest.raises(ValueError, match="odd.png") as err:
        ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "c")).setup()
    assert "data.image_size" in str(err.value)
    dm = ImageFolderDataModule(root=str(root), image_size=8, cache_dir=str(tmp_path / "c"))
    dm.setup()
    assert dm.train_x.shape == (13, 3, 8, 8)


@pytest.mark.parametrize("layout", ["dir", "zip"])
def test_image_folder_non_image_file_is_named(tmp_path, layout):
    entries = _tree_entries()
    entries["train/dog/notes.txt"] = b"not an image"
    root = _write_dir(tmp_path / "ds", entries) if layout == "dir" else _write_zip(tmp_path / "ds.zip", entries)
    with pytest.raises(ValueError, match="not a decodable image") as err:
        ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "c")).setup()
    assert "train/dog/notes.txt" in str(err.value) and str(root) in str(err.value)


@pytest.mark.parametrize("layout", ["dir", "zip"])
def test_image_folder_empty_class_folder_is_named(tmp_path, layout):
    entries = _tree_entries()
    if layout == "dir":
        root = _write_dir(tmp_path / "ds", entries)
        (root / "train" / "fox").mkdir()
    else:
        root = _write_zip(tmp_path / "ds.zip", entries, dirs=["train/fox/"])
    with pytest.raises(ValueError, match="empty class folder") as err:
        ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "c")).setup()
    assert "train/fox" in str(err.value)


def test_image_folder_class_mismatch_and_missing_root(tmp_path):
    entries = {k: v for k, v in _tree_entries().items() if not k.startswith("test/emu/")}
    root = _write_dir(tmp_path / "ds", entries)
    with pytest.raises(ValueError, match="emu"):
        ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "c")).setup()
    with pytest.raises(ValueError, match="data.num_classes"):
        ImageFolderDataModule(root=str(_write_dir(tmp_path / "ok", _tree_entries())), num_classes=4).setup()
    missing = tmp_path / "nowhere"
    with pytest.raises(DataUnavailableError, match=str(missing)):
        ImageFolderDataModule(root=str(missing)).prepare_data()
    with pytest.raises(DataUnavailableError, match=str(missing)):
        ImageFolderDataModule(root=str(missing)).setup()
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="train"):
        ImageFolderDataModule(root=str(tmp_path / "flat")).setup()


@pytest.mark.parametrize("layout", ["dir", "zip"])
def test_image_folder_cache_hit_and_invalidation(tmp_path, monkeypatch, layout):
    entries = _tree_entries()
    root = _write_dir(tmp_path / "ds", entries) if layout == "dir" else _write_zip(tmp_path / "ds.zip", entries)
    first = ImageFolderDataModule(root=str(root))  # default cache dir: $XDG_CACHE_HOME/batlit
    first.setup()
    cache_files = list((tmp_path / "xdg-cache" / "batlit").glob("image_folder-*.npz"))
    assert len(cache_files) == 1

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again despite a cache")

    monkeypatch.setattr(image_folder_mod, "decode_images", no_decode)
    second = ImageFolderDataModule(root=str(root))
    second.setup()
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    assert second.class_names == first.class_names

    # Changing a file (size/mtime) misses the cache.
    changed = root / "train" / "cat" / "000.png" if layout == "dir" else root
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        ImageFolderDataModule(root=str(root)).setup()
    # So do other decoding options.
    with pytest.raises(AssertionError, match="decoded again"):
        ImageFolderDataModule(root=str(root), image_size=4).setup()


# --------------------------------------------------------------------------------------------------
# The real CIFAR-10 JPEG copy
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_jpeg_cache(tmp_path_factory):
    if not (CIFAR_JPEG / "train.zip").is_file() or not (CIFAR_JPEG / "test.zip").is_file():
        pytest.skip(f"../shared/data/cifar10-jpeg not found: no train.zip/test.zip under {CIFAR_JPEG.resolve()}")
    return tmp_path_factory.mktemp("cifar-jpeg-cache")


def test_cifar10_jpeg_image_folder(cifar_jpeg_cache, monkeypatch):
    t0 = time.perf_counter()
    dm = ImageFolderDataModule(root=str(CIFAR_JPEG), image_size=32, num_classes=10, cache_dir=str(cifar_jpeg_cache))
    dm.prepare_data()
    dm.setup()
    cold = time.perf_counter() - t0
    assert dm.class_names == CIFAR10_CLASSES
    assert dm.train_x.shape == (50_000, 3, 32, 32) and dm.test_x.shape == (10_000, 3, 32, 32)
    assert dm.train_x.dtype == torch.uint8
    assert torch.bincount(dm.train_y).tolist() == [5000] * 10
    assert torch.bincount(dm.test_y).tolist() == [1000] * 10
    # Spot-check pixels against a direct Pillow decode of the zip member (test is in file order).
    with zipfile.ZipFile(CIFAR_JPEG / "test.zip") as zf:
        for idx, member in ((0, "test/airplane/0000.jpg"), (3456, "test/cat/0456.jpg")):
            ref = np.asarray(Image.open(io.BytesIO(zf.read(member))).convert("RGB"))
            assert np.array_equal(dm.test_x[idx].permute(1, 2, 0).numpy(), ref)

    monkeypatch.setattr(image_folder_mod, "decode_images", lambda *a, **k: pytest.fail("cache missed"))
    t0 = time.perf_counter()
    sub = ImageFolderDataModule(
        root=str(CIFAR_JPEG), image_size=32, cache_dir=str(cifar_jpeg_cache),
        train_subset=1000, test_subset=500, val_size=100, batch_size=256,
    )
    sub.setup()
    cached = time.perf_counter() - t0
    print(f"\ncifar10-jpeg decode: cold setup {cold:.1f} s, cached setup {cached:.2f} s")
    assert (len(sub.train_y), len(sub.val_y), len(sub.test_y)) == (1000, 100, 500)
    assert torch.bincount(sub.train_y).tolist() == [100] * 10
    x, y = next(iter(sub.train_dataloader()))
    assert x.shape == (256, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    assert cached < 10


# --------------------------------------------------------------------------------------------------
# Download failures
# --------------------------------------------------------------------------------------------------


def test_cifar10_download_false_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar_mod, "download_and_extract_archive", lambda *a, **k: pytest.fail("tried to download"))
    root = tmp_path / "empty"
    t0 = time.perf_counter()
    with pytest.raises(DataUnavailableError) as err:
        CIFAR10DataModule(root=str(root), download=False).prepare_data()
    assert time.perf_counter() - t0 < 1
    msg = str(err.value)
    assert str(root) in msg and "data.download" in msg and "\n" not in msg
    with pytest.raises(DataUnavailableError):
        CIFAR10DataModule(root=str(root), download=False).setup()


def test_cifar10_unreachable_download_is_data_unavailable(tmp_path, monkeypatch):
    # Hermetic: a closed local port stands in for "no internet" even where there is internet.
    monkeypatch.setattr(cifar_mod.datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    root = tmp_path / "empty"
    before = socket.getdefaulttimeout()
    t0 = time.perf_counter()
    with pytest.raises(DataUnavailableError) as err:
        CIFAR10DataModule(root=str(root), download=True).prepare_data()
    assert time.perf_counter() - t0 < 30
    assert socket.getdefaulttimeout() == before  # the temporary timeout is restored
    msg = str(err.value)
    assert str(root) in msg and "could not be downloaded" in msg and "cifar-10-batches-py" in msg
    assert "\n" not in msg


def test_cifar10_real_download_fails_fast_offline(tmp_path):
    try:
        socket.getaddrinfo("www.cs.toronto.edu", 443)
    except OSError:
        pass  # offline: the real download path must fail quickly
    else:
        pytest.skip("internet available: this would download CIFAR-10 (170 MB)")
    root = tmp_path / "empty"
    t0 = time.perf_counter()
    with pytest.raises(DataUnavailableError, match="could not be downloaded") as err:
        CIFAR10DataModule(root=str(root), download=True).setup()
    assert time.perf_counter() - t0 < 30
    assert str(root) in str(err.value)


def test_imagenette_on_a_fake_extracted_archive(tmp_path, monkeypatch):
    from torchvision.datasets import Imagenette

    folder = tmp_path / "in" / "imagenette2-160"
    wnids = sorted(Imagenette._WNID_TO_CLASS)
    for split, n in (("train", 3), ("val", 2)):
        for k, wnid in enumerate(wnids):
            (folder / split / wnid).mkdir(parents=True)
            for i in range(n):
                img = Image.new("RGB", (48, 24), (0, 0, 0))
                img.paste((20 * k, 255, 0), (12, 0, 36, 24))  # the centre square is the class colour
                img.save(folder / split / wnid / f"{wnid}_{i}.JPEG", quality=95)
    dm = ImagenetteDataModule(root=str(tmp_path / "in"), image_size=16, download=False, cache_dir=str(tmp_path / "c"))
    assert dm.crop_padding == 2  # image_size // 8
    dm.prepare_data()
    dm.setup()
    assert dm.class_names[0] == "tench" and dm.num_classes == 10
    assert dm.train_x.shape == (30, 3, 16, 16) and dm.test_x.shape == (20, 3, 16, 16)
    # Shorter side 24 -> 16, then the centre 16x16 crop keeps only the class-coloured square.
    assert int(dm.train_x[:, 1, :, 1:-1].min()) > 230 and int(dm.train_x[:, 1].min()) > 150  # edges blend a little
    assert torch.equal(torch.bincount(dm.train_y), torch.full((10,), 3))
    monkeypatch.setattr("batlit.data.imagenette.decode_images", lambda *a, **k: pytest.fail("cache missed"))
    again = ImagenetteDataModule(root=str(tmp_path / "in"), image_size=16, download=False, cache_dir=str(tmp_path / "c"))
    again.setup()
    assert torch.equal(again.train_x, dm.train_x)


def test_imagenette_missing_without_download(tmp_path):
    with pytest.raises(DataUnavailableError, match="Imagenette") as err:
        ImagenetteDataModule(root=str(tmp_path / "in"), download=False).prepare_data()
    assert str(tmp_path / "in") in str(err.value)


# --------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["cifar10", "cifar100", "imagenette", "image_folder", "cifar10_jpeg", "digits", "synthetic"]
)
def test_data_configs_instantiate(tmp_path, name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    data = OmegaConf.load(CONF_DATA / f"{name}.yaml")
    for key in ("_target_", "num_classes", "in_channels", "image_size", "mean", "std", "root", "batch_size"):
        assert key in data.keys(), f"{name}.yaml lacks {key}"
    cfg = OmegaConf.merge(
        {"paths": {"data_dir": str(tmp_path / "data"), "root_dir": str(REPO)}, "seed": 0}, {"data": data}
    )
    if name == "image_folder":
        assert OmegaConf.is_missing(cfg.data, "root")
        cfg.data.root = str(_write_dir(tmp_path / "tiny", _tree_entries()))
    dm = instantiate(cfg.data)
    assert isinstance(dm, ImageDataModule)
    if name in ("digits", "synthetic", "image_folder"):
        dm.setup()
        if cfg.data.num_classes is not None:
            assert dm.num_classes == cfg.data.num_classes
        if name != "image_folder":
            assert dm.in_channels == cfg.data.in_channels and dm.image_size == (cfg.data.image_size,) * 2
        mean = cfg.data.mean
        assert mean is None or len(mean) == dm.in_channels
