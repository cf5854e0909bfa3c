"""Any image classification dataset in the ImageFolder convention, from folders or zip files.

Images are decoded once with Pillow (straight from the zip when zipped, in parallel processes when
there are many) and the decoded uint8 arrays are cached outside the data root, so later runs start
in about a second.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import (
    DataUnavailableError,
    ImageDataModule,
    LoadedData,
    cache_key,
    default_cache_dir,
    load_cached,
    save_cached,
)

__all__ = ["ImageFolderDataModule", "decode_images"]

_CACHE_VERSION = 1
_MODES = {3: "RGB", 1: "L"}
# Below this many images a process pool costs more than it saves.
_PARALLEL_MIN_IMAGES = 4000


def _skipped(name: str) -> bool:
    """Hidden files/folders and macOS zip metadata (``__MACOSX/``) in a zip are not samples."""
    return name.startswith((".", "__MACOSX/")) or "/." in name or "/__MACOSX/" in name


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def _open_image(data: bytes, shown: str, mode: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as err:
        raise ValueError(f"not a decodable image: '{shown}' ({type(err).__name__}: {err})") from None
    return img if img.mode == mode else img.convert(mode)


def _resize(img: Image.Image, image_size: int | None, resize: str) -> Image.Image:
    if image_size is None or img.size == (image_size, image_size):
        return img
    if resize == "square":
        return img.resize((image_size, image_size), Image.BILINEAR)
    # "shorter": shorter side to image_size, then a centred square crop.
    w, h = img.size
    scale = image_size / min(w, h)
    nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - image_size) // 2, (nh - image_size) // 2
    return img.crop((left, top, left + image_size, top + image_size))


def _zip_members(zip_path: str, names: list[str]) -> list[tuple]:
    """Where each member's bytes lie, so workers can read them without re-parsing the zip index.

    Parsing the central directory of a 50k-member zip costs ~0.4 s; doing it once here rather
    than once per worker chunk matters when decoding takes only a few seconds in total.
    """
    with zipfile.ZipFile(zip_path) as zf:
        infos = [zf.getinfo(n) for n in names]
    return [(i.filename, i.header_offset, i.compress_size, i.compress_type, i.flag_bits, i.CRC) for i in infos]


def _read_member(f, zip_path: str, member: tuple) -> bytes:
    name, offset, size, method, flags, crc = member
    if flags & 0x1 or method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        with zipfile.ZipFile(zip_path) as zf:  # encrypted or unusual compression: rare, slow path
            return zf.read(name)
    f.seek(offset)
    header = f.read(zipfile.sizeFileHeader)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    f.seek(offset + zipfile.sizeFileHeader + name_len + extra_len)
    data = f.read(size)
    if method == zipfile.ZIP_DEFLATED:
        data = zlib.decompress(data, -15)
    if zlib.crc32(data) != crc:
        raise ValueError(f"corrupt zip member: '{zip_path}/{name}' (CRC mismatch)")
    return data


def _iter_images(zip_path: str | None, items: list, mode: str, image_size: int | None, resize: str):
    """Yield ``(shown path, decoded image)`` for zip members (see :func:`_zip_members`) or files."""
    # Each process opens its own handle: a handle inherited through fork would share its offset.
    zf = open(zip_path, "rb") if zip_path is not None else None
    try:
        for item in items:
            if zf is not None:
                shown, data = f"{zip_path}/{item[0]}", _read_member(zf, zip_path, item)
            else:
                with open(item, "rb") as f:
                    shown, data = item, f.read()
            yield shown, _resize(_open_image(data, shown, mode), image_size, resize)
    finally:
        if zf is not None:
            zf.close()


def _decode_chunk(job: tuple) -> np.ndarray:
    """Decode one chunk of images into a (n, H, W, C) uint8 array (runs in pool workers)."""
    zip_path, items, mode, image_size, resize, (h, w) = job
    channels = 3 if mode == "RGB" else 1
    out = np.empty((len(items), h, w, channels), dtype=np.uint8)
    for i, (shown, img) in enumerate(_iter_images(zip_path, items, mode, image_size, resize)):
        if img.size != (w, h):
            raise ValueError(
                f"image '{shown}' is {img.size[0]}x{img.size[1]} but earlier images are {w}x{h} (WxH); "
                f"set data.image_size to resize them all"
            )
        out[i] = np.asarray(img).reshape(h, w, channels)
    return out


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def decode_images(
    zip_path: str | None,
    names: list[str],
    mode: str,
    image_size: int | None,
    resize: str = "square",
    expected_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode ``names`` (zip members of ``zip_path``, or file paths when it is None) to uint8 NCHW.

    Every image is converted to ``mode`` ("RGB"/"L") and resized when ``image_size`` is given;
    otherwise all must share the first image's size. Uses a process pool for large sets.
    """
    if not names:
        raise ValueError("no images to decode")
    items = _zip_members(zip_path, names) if zip_path is not None else list(names)
    if expected_hw is None:
        if image_size is not None:
            expected_hw = (image_size, image_size)
        else:  # the first image fixes the size every other image must have
            _, first = next(_iter_images(zip_path, items[:1], mode, None, resize))
            expected_hw = (first.height, first.width)
    n_workers = _workers()
    pool = None
    if len(items) >= _PARALLEL_MIN_IMAGES and n_workers > 1:
        # fork is cheap on Linux (no re-import of torch); elsewhere use the platform default.
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
        try:
            pool = ctx.Pool(n_workers)
        except (AssertionError, OSError):  # e.g. inside a daemonic process: decode serially
            pool = None
    if pool is None:
        arr = _decode_chunk((zip_path, items, mode, image_size, resize, expected_hw))
    else:
        bounds = np.linspace(0, len(items), n_workers * 2 + 1).astype(int)
        jobs = [(zip_path, items[a:b], mode, image_size, resize, expected_hw) for a, b in zip(bounds[:-1], bounds[1:])]
        with pool:
            arr = np.concatenate(pool.map(_decode_chunk, jobs, chunksize=1))
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------------------------------
# Finding the splits
# --------------------------------------------------------------------------------------------------


@dataclass
class _Split:
    """The files of one split: a folder tree (zip_path None, names are paths) or zip members."""

    where: str  # shown in messages
    zip_path: str | None
    files: dict[str, list[str]] = field(default_factory=dict)  # class -> sorted names
    empty: list[str] = field(default_factory=list)  # class folders without files (shown paths)


def _split_from_dir(folder: Path) -> _Split:
    split = _Split(where=str(folder), zip_path=None)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue  # loose files next to class folders are not samples (torchvision does the same)
        found = []
        for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".")]
        if found:
            split.files[entry.name] = sorted(found)
        else:
            split.empty.append(entry.path)
    return split


def _split_from_zip(zip_path: Path, names: list[str], prefix: str) -> _Split:
    """Members under ``prefix`` as ``<class>/.../<file>``; directory entries reveal empty classes."""
    split = _Split(where=f"{zip_path}/{prefix}".rstrip("/"), zip_path=str(zip_path))
    dirs = set()
    for name in names:
        if not name.startswith(prefix) or _skipped(name):
            continue
        rest = name[len(prefix) :]
        parts = rest.rstrip("/").split("/")
        if name.endswith("/"):
            if len(parts) == 1 and parts[0]:
                dirs.add(parts[0])
            continue
        if len(parts) < 2:
            continue  # a loose file next to the class folders
        split.files.setdefault(parts[0], []).append(name)
    for cls in split.files.values():
        cls.sort()
    split.files = dict(sorted(split.files.items()))
    split.empty = [f"{zip_path}/{prefix}{d}/" for d in sorted(dirs - set(split.files))]
    return split


def _zip_names(zip_path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            return zf.namelist()
    except zipfile.BadZipFile as err:
        raise ValueError(f"not a readable zip file: '{zip_path}' ({err})") from None


_LAYOUTS = (
    "a folder with train/ and test/ (or val/) class folders, a .zip with those, "
    "or a folder with train.zip and test.zip (or val.zip)"
)


def _not_found(root: Path) -> str:
    return f"image folder not found: '{root}'. Set data.root to {_LAYOUTS} (there is nothing to download)."


def _find_splits(root: Path) -> tuple[_Split, _Split, list[Path]]:
    """Return (train, test, files whose size+mtime key the cache) for any supported layout."""
    layouts = _LAYOUTS  # shown in every layout error
    if not root.exists():
        raise DataUnavailableError(_not_found(root))
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise ValueError(f"data.root '{root}' is a file but not a zip; expected {layouts}")
        names = _zip_names(root)
        tops = {n.split("/", 1)[0] for n in names if not _skipped(n)}
        # Allow one wrapping folder, e.g. cifar10/train/... inside cifar10.zip.
        base = "" if "train" in tops else (f"{next(iter(tops))}/" if len(tops) == 1 else "")
        if not any(n.startswith(f"{base}train/") for n in names):
            raise ValueError(f"no train/ folder inside '{root}'; expected {layouts}")
        test_name = "test" if any(n.startswith(f"{base}test/") for n in names) else "val"
        if not any(n.startswith(f"{base}{test_name}/") for n in names):
            raise ValueError(f"no test/ or val/ folder inside '{root}'; expected {layouts}")
        return (
            _split_from_zip(root, names, f"{base}train/"),
            _split_from_zip(root, names, f"{base}{test_name}/"),
            [root],
        )
    if (root / "train").is_dir():
        test_dir = root / "test" if (root / "test").is_dir() else root / "val"
        if not test_dir.is_dir():
            raise ValueError(f"'{root}' has train/ but no test/ or val/ folder; expected {layouts}")
        train, test = _split_from_dir(root / "train"), _split_from_dir(test_dir)
        files = [Path(p) for s in (train, test) for names in s.files.values() for p in names]
        return train, test, files
    if (root / "train.zip").is_file():
        test_zip = root / "test.zip" if (root / "test.zip").is_file() else root / "val.zip"
        if not test_zip.is_file():
            raise ValueError(f"'{root}' has train.zip but no test.zip or val.zip; expected {layouts}")
        splits = []
        for zp in (root / "train.zip", test_zip):
            names = _zip_names(zp)
            # Each zip holds <split>/<class>/... (any split name) or directly <class>/...
            tops = {n.split("/", 1)[0] for n in names if not _skipped(n)}
            prefix = f"{tops.pop()}/" if len(tops) == 1 and tops <= {"train", "test", "val"} else ""
            splits.append(_split_from_zip(zp, names, prefix))
        return splits[0], splits[1], [root / "train.zip", test_zip]
    raise ValueError(f"no train/ folder or train.zip in data.root '{root}'; expected {layouts}")


def _zip_sources(root: Path) -> list[Path]:
    """The zip file(s) a zipped layout reads (the same key files :func:`_find_splits` returns)."""
    if root.is_file():
        return [root]
    if root.is_dir() and not (root / "train").is_dir() and (root / "train.zip").is_file():
        test_zip = root / "test.zip" if (root / "test.zip").is_file() else root / "val.zip"
        if test_zip.is_file():
            return [root / "train.zip", test_zip]
    return []


# --------------------------------------------------------------------------------------------------
# The DataModule
# --------------------------------------------------------------------------------------------------


class ImageFolderDataModule(ImageDataModule):
    """Your own image classification data: ``train/<class>/*`` and ``test/<class>/*`` (or ``val/``).

    ``root`` may be a folder with ``train/`` and ``test/`` (or ``val/``) class folders, a ``.zip``
    with those inside, or a folder with ``train.zip`` and ``test.zip`` (or ``val.zip``), each
    holding ``<split>/<class>/...`` or directly ``<class>/...``. Class names are the sorted train
    folder names; the test split must have the same classes.

    Args:
        image_size: resize every image to ``image_size x image_size``; ``None`` keeps the sizes,
            which must then all be equal.
        in_channels: 3 decodes as RGB, 1 as grayscale.
        cache_dir: where decoded arrays are cached (default ``$XDG_CACHE_HOME/batlit`` or
            ``~/.cache/batlit``; never the data root, which may be read-only).
        crop_padding: ``None`` (default) means image size // 8, i.e. 4 for 32x32 images.
        **kwargs: the :class:`~batlit.data.base.ImageDataModule` arguments.
    """

    dataset_name = "image_folder"
    _load_in_prepare_data = True

    def __init__(
        self,
        root: str = "data",
        image_size: int | None = None,
        in_channels: int = 3,
        cache_dir: str | None = None,
        crop_padding: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(root=root, crop_padding=crop_padding, **kwargs)
        if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"data.image_size must be null or an integer >= 1, got {image_size!r}")
        if in_channels not in _MODES:
            raise ValueError(f"data.in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
        self.requested_image_size = image_size
        self.requested_in_channels = in_channels
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    def _ensure_files(self) -> None:
        # Only existence here (prepare_data); setup() checks the layout in detail.
        root = self._root_path()
        if not root.exists():
            raise DataUnavailableError(_not_found(root))

    def _root_path(self) -> Path:
        return Path(os.path.abspath(os.path.expanduser(self.root)))

    def cache_path(self, root: Path, key_files: list[Path]) -> Path:
        """The cache file for these inputs: keyed by path, file sizes + mtimes and decode options."""
        stats = []
        for p in key_files:
            st = p.stat()
            stats.append((str(p), st.st_size, st.st_mtime_ns))
        key = cache_key(
            {
                "version": _CACHE_VERSION,
                "root": str(root),
                "files": stats,
                "image_size": self.requested_image_size,
                "in_channels": self.requested_in_channels,
            }
        )
        return self.cache_dir / f"image_folder-{root.name}-{key}.npz"

    def _load(self) -> LoadedData:
        root = self._root_path()
        zips = _zip_sources(root)
        if zips:  # a zipped dataset is keyed by its zips alone: a cache hit skips reading their index
            cached = load_cached(self.cache_path(root, zips))
            if cached is not None:
                return cached
        train, test, key_files = _find_splits(root)
        for split in (train, test):
            if split.empty:
                raise ValueError(f"empty class folder: '{split.empty[0]}' (every class needs at least one image)")
        if not train.files:
            raise ValueError(f"no class folders with images in '{train.where}'")
        class_names = list(train.files)
        if set(test.files) != set(class_names):
            missing = sorted(set(class_names) - set(test.files))
            extra = sorted(set(test.files) - set(class_names))
            raise ValueError(
                f"test classes in '{test.where}' differ from train classes in '{train.where}': "
                f"missing from test {missing}, not in train {extra}"
            )

        path = self.cache_path(root, key_files)
        cached = None if zips else load_cached(path)  # zipped layouts were looked up above
        if cached is not None:
            return cached

        mode = _MODES[self.requested_in_channels]
        arrays = {}
        expected_hw = None
        for name, split in (("train", train), ("test", test)):
            names = [n for cls in class_names for n in split.files[cls]]
            labels = [i for i, cls in enumerate(class_names) for _ in split.files[cls]]
            x = decode_images(split.zip_path, names, mode, self.requested_image_size, "square", expected_hw)
            expected_hw = tuple(x.shape[2:])  # test must match train's size too
            arrays[name] = (torch.from_numpy(x), torch.tensor(labels, dtype=torch.long))
        data = LoadedData.from_splits(arrays["train"], arrays["test"], class_names)
        save_cached(path, data)
        return data
