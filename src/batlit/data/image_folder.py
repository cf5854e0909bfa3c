"""Any image classification dataset in the ImageFolder convention, from folders or zip files.

Images are decoded once with Pillow (straight from the zip when zipped, in parallel processes when
there are many) and the decoded uint8 arrays are cached outside the data root, so later runs start
in about a second.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import struct
import sys
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import DataUnavailableError, ImageDataModule
from .cache_entries import cache_key, cached, default_cache_dir
from .datasets import LoadedData

__all__ = ["ImageFolderDataModule", "decode_images"]

_CACHE_VERSION = 1
_MODES = {3: "RGB", 1: "L"}
# Below this many images a process pool costs more than it saves.
_PARALLEL_MIN_IMAGES = 4000
# Files from elsewhere are bounded before they are decoded. Pillow's own threshold (a quarter GiB
# of RGB), as an error rather than its warning: a header may claim any size for a few bytes.
_MAX_IMAGE_PIXELS = 89_478_485
# A zip member may inflate to at most this much, and beyond _RATIO_FREE_BYTES at most _MAX_RATIO
# times its compressed size: image files hardly compress, a zip bomb inflates ~1000:1.
_MAX_MEMBER_BYTES = 512 * 1024**2
_MAX_RATIO = 100
_RATIO_FREE_BYTES = 1024**2
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # signature, version, flags, method, time, date, crc, sizes, lengths


def _skipped(name: str) -> bool:
    """Hidden files/folders and macOS zip metadata (``__MACOSX/``) in a zip are not samples."""
    return name.startswith((".", "__MACOSX/")) or "/." in name or "/__MACOSX/" in name


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def _too_large(shown: str, detail: str) -> ValueError:
    return ValueError(f"image too large: '{shown}' {detail}; batlit decodes at most {_MAX_IMAGE_PIXELS:,} "
                      f"pixels per image (a decompression bomb?)")


def _open_image(data: bytes, shown: str, mode: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        declared = re.search(r"\((\d+) pixels\)", str(err))  # Pillow: "Image size (N pixels) exceeds ..."
        raise _too_large(shown, f"declares {int(declared[1]):,} pixels" if declared else f"({err})") from None
    except Exception as err:
        raise ValueError(f"not a decodable image: '{shown}' ({type(err).__name__}: {err})") from None
    w, h = img.size
    if w * h > _MAX_IMAGE_PIXELS:  # also when a user has switched Pillow's check off
        raise _too_large(shown, f"declares {w}x{h} = {w * h:,} pixels")
    try:
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


def _bad_member(zip_path: str, name: str, detail: str) -> ValueError:
    return ValueError(f"corrupt zip member: '{zip_path}/{name}' {detail}")


def check_zip_directory(zip_path: str, infos: list, file_len: int, max_member_bytes: int | None = _MAX_MEMBER_BYTES) -> None:
    """The sizes a zip's central directory declares, checked before anything is inflated: each
    member's header and bytes lie inside the file, a stored member's two sizes agree, and (when
    ``max_member_bytes`` is given) no member declares more than that or, above 1 MiB, more than
    100 times its compressed size. Also used for checkpoints (batlit.checkpoint.check_archive)."""
    for i in infos:
        bad = None
        if i.header_offset + zipfile.sizeFileHeader > file_len:
            bad = f"has its local header at offset {i.header_offset}, past the end of the {file_len}-byte file"
        elif i.header_offset + zipfile.sizeFileHeader + i.compress_size > file_len:
            bad = f"declares {i.compress_size} compressed bytes, more than the {file_len}-byte file holds there"
        elif max_member_bytes is not None and i.file_size > max_member_bytes:
            bad = f"declares {i.file_size} bytes uncompressed, more than {max_member_bytes} (a zip bomb?)"
        elif (max_member_bytes is not None and i.file_size > _RATIO_FREE_BYTES
              and i.file_size > _MAX_RATIO * i.compress_size):
            bad = (f"would inflate {i.compress_size} bytes to {i.file_size}, more than {_MAX_RATIO}:1 "
                   f"(a zip bomb?)")
        elif i.compress_type == zipfile.ZIP_STORED and i.compress_size != i.file_size:
            bad = f"is stored uncompressed but declares {i.compress_size} bytes stored and {i.file_size} in all"
        if bad:
            raise _bad_member(zip_path, i.filename, bad)


def _zip_members(zip_path: str, names: list[str]) -> list[tuple]:
    """Where each member's bytes lie, so workers can read them without re-parsing the zip index.

    Parsing the central directory of a 50k-member zip costs ~0.4 s; doing it once here rather
    than once per worker chunk matters when decoding takes only a few seconds in total. The sizes
    the index declares are checked here, before any decoding: they must fit in the file and stay
    within the bounds above.
    """
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = [zf.getinfo(n) for n in names]
    except Exception as err:  # zipfile raises many types on crafted input
        raise ValueError(f"not a readable zip file: '{zip_path}' ({type(err).__name__}: {err})") from None
    check_zip_directory(zip_path, infos, os.path.getsize(zip_path))
    return [(i.filename, i.orig_filename, i.header_offset, i.compress_size, i.file_size, i.compress_type,
             i.flag_bits, i.CRC) for i in infos]


def _read_member(f, zip_path: str, member: tuple) -> bytes:
    """One member's bytes, reading no more than its declared sizes and checking the local header
    against the central directory (a crafted zip may make them disagree)."""
    name, orig_name, offset, csize, usize, method, flags, crc = member
    if flags & 0x1 or method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        try:  # encrypted or unusual compression: rare, slow path, bounded all the same
            with zipfile.ZipFile(zip_path) as zf, zf.open(name) as fh:
                data = fh.read(usize + 1)
        except Exception as err:
            raise _bad_member(zip_path, name, f"cannot be read ({type(err).__name__}: {err})") from None
        if len(data) != usize:
            raise _bad_member(zip_path, name, f"declares {usize} bytes but holds {len(data)}")
        return data
    file_len = os.fstat(f.fileno()).st_size
    f.seek(offset)
    raw = f.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
        raise _bad_member(zip_path, name, f"has no local header at offset {offset}")
    _, _, l_flags, l_method, _, _, l_crc, l_csize, l_usize, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
    l_name = f.read(name_len).decode("utf-8" if l_flags & 0x800 else "cp437", errors="replace")
    sizes_here = not l_flags & 0x8 and 0xFFFFFFFF not in (l_csize, l_usize)  # else in a descriptor / zip64 extra
    if l_method != method or l_name != orig_name or (sizes_here and (l_crc, l_csize, l_usize) != (crc, csize, usize)):
        raise _bad_member(zip_path, name, "has a local header that disagrees with the zip's central directory")
    start = offset + _LOCAL_HEADER.size + name_len + extra_len
    if start + csize > file_len:
        raise _bad_member(zip_path, name, f"declares {csize} compressed bytes at offset {start}, past the end "
                                          f"of the {file_len}-byte file")
    f.seek(start)
    data = f.read(csize)
    if method == zipfile.ZIP_DEFLATED:
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(data, usize + 1)  # bounded: never more than declared (+1 to notice)
        except zlib.error as err:
            raise _bad_member(zip_path, name, f"is not valid deflate data ({err})") from None
        if len(data) != usize or not inflater.eof:
            got = "more" if len(data) > usize else len(data) if len(data) < usize else "a stream that goes on"
            raise _bad_member(zip_path, name, f"declares {usize} bytes uncompressed but inflates to {got}")
    if zlib.crc32(data) != crc:
        raise _bad_member(zip_path, name, "(CRC mismatch)")
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
                try:
                    with open(item, "rb") as f:
                        if os.fstat(f.fileno()).st_size > _MAX_MEMBER_BYTES:
                            raise ValueError(f"image file too large: '{item}' has more than {_MAX_MEMBER_BYTES} bytes")
                        shown, data = item, f.read()
                except OSError as err:
                    raise ValueError(f"cannot read image file: '{item}' ({err.strerror or err})") from None
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


def _memory_bytes() -> int:
    """Physical memory of this machine (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _check_decoded_size(n: int, hw: tuple[int, int], channels: int, shown: str) -> None:
    """A decompression bomb spread over many images: each passes the per-image pixel cap, but the
    decoded array (n x H x W x C bytes) would not fit. Refused before it is allocated, naming the
    data, when it exceeds half of this machine's memory (``BATLIT_MAX_DECODED_BYTES`` overrides)."""
    need = n * hw[0] * hw[1] * channels
    cap = int(os.environ.get("BATLIT_MAX_DECODED_BYTES") or _memory_bytes() // 2 or 2**62)
    if need > cap:
        raise ValueError(f"'{shown}' would decode to {need / 2**30:.1f} GiB ({n} images of {hw[1]}x{hw[0]}), over "
                         f"the {cap / 2**30:.1f} GiB allowed (half this machine's memory; BATLIT_MAX_DECODED_BYTES); "
                         "set data.image_size to resize the images")


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
    _check_decoded_size(len(items), expected_hw, 1 if mode == "L" else 3, zip_path or str(Path(names[0]).parent))
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


def _contains(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _scan(folder: str) -> list[tuple[os.DirEntry, bool]]:
    """``(entry, is a folder)`` for the visible entries of ``folder``, sorted by name, following
    symlinks; a link that loops or leads nowhere is a ValueError naming it."""
    try:
        listing = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        raise ValueError(f"cannot list folder: '{folder}' ({err.strerror or err})") from None
    out = []
    for e in listing:
        if e.name.startswith("."):
            continue
        try:
            is_dir = e.is_dir()
            ok = is_dir or e.is_file()
        except OSError as err:  # ELOOP: a->b, b->a
            raise ValueError(f"symlink loop: '{e.path}' ({err.strerror or err})") from None
        if not ok and e.is_symlink():
            raise ValueError(f"broken symlink: '{e.path}' points to nothing")
        if ok:
            out.append((e, is_dir))
    return out


def _walk_files(top: str, chain: tuple[str, ...]) -> list[str]:
    """Every visible file under ``top``, sorted. Symlinked folders are followed once; one that
    leads back to a folder above it (``chain``: real paths from the split folder down) is a
    ValueError naming it, where ``os.walk(followlinks=True)`` would repeat every file in the loop
    until the path grew too long."""
    found, stack = [], [(top, chain)]
    while stack:
        folder, above = stack.pop()
        for e, is_dir in _scan(folder):
            if not is_dir:
                found.append(e.path)
                continue
            real = os.path.realpath(e.path)
            if any(_contains(real, a) for a in above):
                raise ValueError(f"symlink loop: '{e.path}' leads back to '{real}', a folder above it")
            stack.append((e.path, (*above, real)))
    return sorted(found)


def _split_from_dir(folder: Path) -> _Split:
    split = _Split(where=str(folder), zip_path=None)
    top = (os.path.realpath(folder),)
    for entry, is_dir in _scan(str(folder)):
        if not is_dir:
            continue  # loose files next to class folders are not samples (torchvision does the same)
        real = os.path.realpath(entry.path)
        if any(_contains(real, a) for a in top):
            raise ValueError(f"symlink loop: '{entry.path}' leads back to '{real}', a folder above it")
        found = _walk_files(entry.path, (*top, real))
        if found:
            split.files[entry.name] = found
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
    except Exception as err:  # zipfile raises many types on crafted input
        raise ValueError(f"not a readable zip file: '{zip_path}' ({type(err).__name__}: {err})") from None


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
            ``~/.cache/batlit``; never the data root, which may be read-only). The cache is capped
            by ``BATLIT_CACHE_MAX_BYTES`` and cleared with ``python -m batlit.data clear``
            (see :mod:`batlit.data.cache`).
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

    def cache_entry(self, root: Path, key_files: list[Path]) -> tuple[Path, str]:
        """The cache file and key for these inputs: keyed by path, file sizes + mtimes and decode options."""
        stats = []
        for p in key_files:
            try:
                st = p.stat()
            except OSError as err:
                raise ValueError(f"cannot read image file: '{p}' ({err.strerror or err})") from None
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
        return self.cache_dir / f"image_folder-{root.name}-{key}.npz", key

    def _load(self) -> LoadedData:
        root = self._root_path()
        zips = _zip_sources(root)
        if zips:  # a zipped dataset is keyed by its zips alone: a cache hit skips reading their index
            return cached(*self.cache_entry(root, zips), lambda: self._decode(*_find_splits(root)[:2]))
        train, test, key_files = _find_splits(root)
        return cached(*self.cache_entry(root, key_files), lambda: self._decode(train, test))

    def _check_classes(self, train: _Split, test: _Split) -> None:
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

    def _decode(self, train: _Split, test: _Split) -> LoadedData:
        self._check_classes(train, test)
        class_names = list(train.files)
        mode = _MODES[self.requested_in_channels]
        arrays = {}
        expected_hw = None
        for name, split in (("train", train), ("test", test)):
            names = [n for cls in class_names for n in split.files[cls]]
            labels = [i for i, cls in enumerate(class_names) for _ in split.files[cls]]
            x = decode_images(split.zip_path, names, mode, self.requested_image_size, "square", expected_hw)
            expected_hw = tuple(x.shape[2:])  # test must match train's size too
            arrays[name] = (torch.from_numpy(x), torch.tensor(labels, dtype=torch.long))
        return LoadedData.from_splits(arrays["train"], arrays["test"], class_names)
