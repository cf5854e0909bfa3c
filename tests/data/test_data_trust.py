"""Files from elsewhere: a crafted zip, an image that declares a huge size or a symlink loop in a
data folder is one ValueError naming the path (the CLI's one-line config error), with nothing
written to the cache."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from batlit.data import ImageFolderDataModule, ImagenetteDataModule
from conftest import TINY, run_cli

VICTIM = "train/cat/0.png"


@pytest.fixture(autouse=True)
def _private_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def _entries() -> dict[str, bytes]:
    return {f"{split}/{cls}/{i}.png": _png((100 * k, 40 * i, 0))
            for split in ("train", "test") for k, cls in enumerate(("cat", "dog")) for i in range(2)}


def _write_dir(root: Path, entries: dict[str, bytes]) -> Path:
    for rel, data in entries.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, data in entries.items():
            zf.writestr(rel, data)
    return path


def _headers(blob: bytes, name: str) -> tuple[int, int]:
    """Offsets of ``name``'s central directory record and local header in a zip."""
    eocd = blob.rindex(b"PK\x05\x06")
    count, _, cd_offset = struct.unpack("<HII", blob[eocd + 10 : eocd + 20])
    pos = cd_offset
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack("<HHH", blob[pos + 28 : pos + 34])
        if blob[pos + 46 : pos + 46 + name_len].decode() == name:
            return pos, struct.unpack("<I", blob[pos + 42 : pos + 46])[0]
        pos += 46 + name_len + extra_len + comment_len
    raise KeyError(name)


def _patch(blob: bytearray, at: int, value: int) -> None:
    blob[at : at + 4] = struct.pack("<I", value)


def _lie(kind: str, blob: bytearray) -> None:
    """Make the victim's headers lie; central record: crc @16, sizes @20/@24, local header offset @42;
    local header: crc @14, sizes @18/@22."""
    central, local = _headers(bytes(blob), VICTIM)
    if kind == "header offset past the end":
        _patch(blob, central + 42, len(blob) + 100)
    elif kind == "compressed size past the end":
        _patch(blob, central + 20, len(blob))
    elif kind == "size disagrees with the inflated length":
        usize = struct.unpack("<I", blob[central + 24 : central + 28])[0]
        _patch(blob, central + 24, usize + 10)
        _patch(blob, local + 22, usize + 10)  # both headers agree, and both lie
    elif kind == "local header disagrees":
        _patch(blob, local + 18, 3)
    elif kind == "huge declared size":
        _patch(blob, central + 24, 0xFFFF_FFF0)


def _no_cache_files(cache_dir: Path) -> bool:
    return not cache_dir.exists() or not any(cache_dir.rglob("*"))


def _refused(root: Path, cache_dir: Path, module=ImageFolderDataModule, **kwargs) -> str:
    dm = module(root=str(root), cache_dir=str(cache_dir), **kwargs)
    with pytest.raises(ValueError) as err:
        dm.prepare_data()
        dm.setup()
    msg = str(err.value)
    assert "\n" not in msg
    assert _no_cache_files(cache_dir), sorted(cache_dir.rglob("*"))
    return msg


LIES = ["header offset past the end", "compressed size past the end", "size disagrees with the inflated length",
        "local header disagrees", "huge declared size"]


@pytest.mark.parametrize("kind", LIES)
def test_a_zip_whose_headers_lie_is_refused(tmp_path, kind):
    z = _write_zip(tmp_path / "ds.zip", _entries())
    blob = bytearray(z.read_bytes())
    _lie(kind, blob)
    z.write_bytes(bytes(blob))
    msg = _refused(z, tmp_path / "cache")
    assert msg.startswith("corrupt zip member:") and f"{z}/{VICTIM}" in msg


def test_a_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    entries = _entries()
    entries["train/dog/bomb.png"] = bytes(8 * 2**20)  # 8 MiB of zeros deflate to ~8 KiB
    z = _write_zip(tmp_path / "ds.zip", entries)
    inflated = []
    real = zlib.decompressobj
    monkeypatch.setattr(zlib, "decompressobj", lambda *a: inflated.append(1) or real(*a))
    msg = _refused(z, tmp_path / "cache")
    assert "zip bomb" in msg and f"{z}/train/dog/bomb.png" in msg
    assert not inflated  # refused from the declared sizes, before decoding anything


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("layout,size,pillow_check", [
    ("dir", (100_000, 100_000), True),  # over twice Pillow's limit: its error
    ("zip", (10_000, 9_000), True),  # over Pillow's limit: only its warning, made an error here
    ("dir", (10_000, 9_000), False),  # Pillow's check switched off by other code: ours still holds
], ids=["pillow-error", "pillow-warning", "pillow-check-off"])
def test_an_image_declaring_a_huge_size_is_refused(tmp_path, monkeypatch, layout, size, pillow_check):
    if not pillow_check:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    entries = _entries()
    entries["train/dog/huge.png"] = _png_declaring(*size)
    root = _write_dir(tmp_path / "ds", entries) if layout == "dir" else _write_zip(tmp_path / "ds.zip", entries)
    msg = _refused(root, tmp_path / "cache")
    assert msg.startswith("image too large:") and "train/dog/huge.png" in msg and str(root) in msg


def test_a_bomb_spread_over_many_images_is_refused_before_it_is_allocated(tmp_path, monkeypatch):
    """Each image passes the per-image cap, but all of them decoded would not fit: one line, before
    the array is allocated (here a 100-byte budget stands in for half the machine's memory)."""
    monkeypatch.setenv("BATLIT_MAX_DECODED_BYTES", "100")  # 4 images of 4x4 RGB are 192 bytes
    root = _write_dir(tmp_path / "ds", _entries())
    msg = _refused(root, tmp_path / "cache")
    assert "would decode to" in msg and "over the 0.0 GiB allowed" in msg and str(root / "train") in msg
    monkeypatch.setenv("BATLIT_MAX_DECODED_BYTES", str(2**30))
    dm = ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    dm.setup()  # within the budget: decodes


def _loop(root: Path, kind: str) -> Path:
    """A symlink loop in a data folder; returns the link the error must name."""
    train = root / "train"
    if kind == "class folder is its split folder":
        os.symlink(train, train / "loop")
        return train / "loop"
    if kind == "inside a class folder":
        os.symlink("..", train / "cat" / "up")  # train/cat/up -> train
        return train / "cat" / "up"
    os.symlink(train / "b", train / "a")  # a -> b, b -> a: the OS refuses to resolve either
    os.symlink(train / "a", train / "b")
    return train / "a"


@pytest.mark.parametrize("kind", ["class folder is its split folder", "inside a class folder", "a->b, b->a"])
def test_a_symlink_loop_is_refused_naming_it(tmp_path, kind):
    root = _write_dir(tmp_path / "ds", _entries())
    link = _loop(root, kind)
    msg = _refused(root, tmp_path / "cache")
    assert msg.startswith("symlink loop:") and f"'{link}'" in msg


def test_a_symlinked_class_folder_is_followed_once(tmp_path):
    entries = _entries()
    root = _write_dir(tmp_path / "ds", {k: v for k, v in entries.items() if "/dog/" not in k})
    for split in ("train", "test"):
        elsewhere = _write_dir(tmp_path / "elsewhere" / split, {f"{i}.png": _png((0, 200, i)) for i in range(3)})
        os.symlink(elsewhere, root / split / "dog")
        os.symlink(elsewhere, root / split / "cat" / "more")  # the same folder again: not a loop
    dm = ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert dm.class_names == ["cat", "dog"] and dm.train_y.tolist() == [0] * 5 + [1] * 3


def test_imagenette_refuses_a_symlink_loop(tmp_path):
    folder = tmp_path / "in" / "imagenette2-160"
    for split in ("train", "val"):
        (folder / split / "n01440764").mkdir(parents=True)
    os.symlink(folder / "train", folder / "train" / "n01440764" / "loop")
    msg = _refused(tmp_path / "in", tmp_path / "cache", ImagenetteDataModule, download=False, image_size=16)
    assert msg.startswith("symlink loop:") and str(folder / "train" / "n01440764" / "loop") in msg


def test_cli_reports_a_lying_zip_as_one_config_error(tmp_path):
    z = _write_zip(tmp_path / "ds.zip", _entries())
    blob = bytearray(z.read_bytes())
    _lie("header offset past the end", blob)
    z.write_bytes(bytes(blob))
    proc = run_cli("batlit.train", *TINY, "data=image_folder", f"data.root={z}", f"data.cache_dir={tmp_path / 'c'}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("batlit: config error: data: corrupt zip member:") and f"{z}/{VICTIM}" in line
    assert _no_cache_files(tmp_path / "c")
