"""The decoded-data cache: one ``.npz`` entry per dataset and decode settings, capped in size.

Datasets decoded from image files (``image_folder``, ``cifar10_jpeg``, ``imagenette``) keep their
uint8 arrays in ``$XDG_CACHE_HOME/batlit`` (``~/.cache/batlit``) unless ``data.cache_dir`` says
otherwise. Each entry is ``<dataset>-<label>-<key>.npz``, ``key`` a hash of the settings and of the
source files' sizes and mtimes, so a changed file or option simply misses.

* **Size cap.** ``BATLIT_CACHE_MAX_BYTES`` (default 2 GiB; ``500M``, ``4G`` and plain byte counts
  work, ``0`` turns the cache off). After each write the least recently used entries (last read or
  written, by mtime) are removed until the total fits; the entry just written is always kept, even
  alone over the cap. Only files named like entries are counted or removed.
* **Concurrent fills.** Entries are written to a temp file in the same folder, fsynced and renamed
  into place. While decoding, a process holds ``fcntl.flock`` on ``<entry>.lock``, so a second
  process (another Hydra job, a DDP rank) waits and then reads the entry instead of decoding again.
  Without ``fcntl`` (Windows) or on a filesystem that refuses locks both decode; the rename still
  keeps the entry whole.
* **Verified reads.** An entry holds a JSON header (format, settings key, dtype, shape, byte count
  and CRC-32 of every array). A truncated, foreign or mismatched entry is reported once, decoded
  again and overwritten; it is never used. Nothing is unpickled.

Command line: ``python -m batlit.data {list,info,clear} [--dir DIR]`` (``batlit/data/__main__.py``;
``python -m batlit.data.cache`` runs the same).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no flock; atomic renames still keep entries whole
    fcntl = None

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMAT",
    "MAX_BYTES_ENV",
    "Entry",
    "cache_key",
    "clear",
    "default_cache_dir",
    "entries",
    "evict",
    "get_or_build",
    "load",
    "main",
    "max_bytes",
    "save",
]

FORMAT = 2  # format 1 (batlit <= this change) had no header: such entries are decoded again
DEFAULT_MAX_BYTES = 2 * 1024**3  # CIFAR-10 is 184 MiB decoded, Imagenette-160 about 1 GiB
MAX_BYTES_ENV = "BATLIT_CACHE_MAX_BYTES"
_HEADER = "__batlit_cache__"  # the npz member holding the JSON header
_ENTRY = re.compile(r"^[A-Za-z0-9_]+-.*-[0-9a-f]{20}\.npz$")  # what batlit names its entries
_TEMP = re.compile(r"^\.(?P<entry>.+\.npz)\.[A-Za-z0-9_]+\.tmp$")  # save()'s temp files
_STALE_TEMP_S = 3600  # a temp file this old belongs to a writer that died
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_warned: set[tuple[str, str]] = set()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/batlit`` or ``~/.cache/batlit``: never inside a (possibly read-only) data root."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "batlit"


def cache_key(payload: Any) -> str:
    """A short stable hash of a JSON-serialisable description of the inputs."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def max_bytes() -> int:
    """The cap from ``BATLIT_CACHE_MAX_BYTES`` (K/M/G/T are powers of 1024), else 2 GiB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?", raw.lower())
    if m is None:
        raise ValueError(f"{MAX_BYTES_ENV}={raw!r} is not a size: give bytes, or e.g. 500M or 4G (0 turns the "
                         f"data cache off)")
    return int(float(m[1]) * _UNITS[m[2]])


def _warn_once(path: Path, problem: str) -> None:
    if (str(path), problem) not in _warned:
        _warned.add((str(path), problem))
        warnings.warn(f"data cache entry '{path}' {problem}; decoding again", stacklevel=3)


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


# --------------------------------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------------------------------


class _Lock:
    """An exclusive ``flock`` on ``lock_path``, removed again on release.

    ``state`` is "held", "busy" (non-blocking and someone else holds it) or "none" (no fcntl, or
    the folder/filesystem refuses: proceed unlocked). Whoever holds the lock may delete the file,
    so after locking we check that the path still names the file we locked, and retry if not.
    """

    def __init__(self, lock_path: Path, blocking: bool = True) -> None:
        self.path, self.blocking, self.state, self._fd = lock_path, blocking, "none", None

    def __enter__(self) -> _Lock:
        if fcntl is None:
            return self
        flags = fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB)
        try:
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, flags)
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except BlockingIOError:
                    os.close(fd)
                    self.state = "busy"
                    return self
                except FileNotFoundError:
                    same = False
                except BaseException:
                    os.close(fd)
                    raise
                if same:
                    self._fd, self.state = fd, "held"
                    return self
                os.close(fd)  # the previous holder removed that file: lock the current one
        except OSError:  # a read-only cache folder, or a filesystem without flock
            return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)  # before unlocking, so a waiter notices and retries
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None


def _lock_path(entry: Path) -> Path:
    return entry.with_name(entry.name + ".lock")


# --------------------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    path: Path
    size: int
    last_used: float  # mtime: set on every read and write


def entries(cache_dir: Path) -> list[Entry]:
    """The entries in ``cache_dir`` (files named like batlit's entries only), least recently used first."""
    found = []
    try:
        listing = list(os.scandir(cache_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for e in listing:
        if _ENTRY.match(e.name):
            try:
                if e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    found.append(Entry(Path(e.path), st.st_size, st.st_mtime))
            except OSError:
                continue  # removed meanwhile
    return sorted(found, key=lambda en: (en.last_used, en.path.name))


def _stale_temps(cache_dir: Path) -> list[Path]:
    now, stale = time.time(), []
    try:
        listing = list(os.scandir(cache_dir))
    except OSError:
        return []
    for e in listing:
        m = _TEMP.match(e.name)
        try:
            if m and _ENTRY.match(m["entry"]) and now - e.stat(follow_symlinks=False).st_mtime > _STALE_TEMP_S:
                stale.append(Path(e.path))
        except OSError:
            continue
    return stale


def _remove(path: Path) -> str:
    """Remove an entry unless a process is filling it: "removed", "busy" or "failed"."""
    with _Lock(_lock_path(path), blocking=False) as lock:
        if lock.state == "busy":
            return "busy"
        try:
            path.unlink()
        except FileNotFoundError:
            pass  # another process evicted it first
        except OSError:
            return "failed"
    return "removed"


def evict(cache_dir: Path, cap: int, keep: Iterable[Path] = ()) -> list[Entry]:
    """Remove least recently used entries until their total is at most ``cap``; never those in
    ``keep``, never one a process is filling, never a file not named like an entry."""
    keep_names = {Path(p).name for p in keep}
    removed = []
    # One evictor at a time: two would each skip the entry the other is removing and take one more.
    with _Lock(cache_dir / "evict.lock"):
        listed = entries(cache_dir)
        total = sum(e.size for e in listed)
        for entry in listed:
            if total <= cap:
                break
            if entry.path.name not in keep_names and _remove(entry.path) == "removed":
                total -= entry.size
                removed.append(entry)
        for tmp in _stale_temps(cache_dir):
            tmp.unlink(missing_ok=True)
    return removed


class _Mismatch(Exception):
    """An entry that reads, but is not the one asked for or disagrees with its header."""


def load(path: Path, key: str, check: Callable[[dict, dict], None] | None = None) -> tuple[dict, dict] | None:
    """The arrays and info of a valid entry for ``key``, marked as used; ``None`` when absent.

    An entry that is unreadable, truncated, for another key or whose arrays disagree with its
    header is reported once (a warning) and treated as absent. ``check(arrays, info)`` may raise
    ``ValueError`` to reject an entry for reasons of the caller's own.
    """
    if not path.is_file():
        return None
    try:
        # Our own handle: np.load leaks its file when the zip is unreadable.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            if _HEADER not in z.files:
                raise _Mismatch("has no header (written by an older batlit)")
            header = json.loads(z[_HEADER].tobytes().decode())
            if header.get("format") != FORMAT:
                raise _Mismatch(f"has format {header.get('format')!r}, not {FORMAT}")
            if header.get("key") != key:
                raise _Mismatch(f"was written for settings {header.get('key')!r}, not {key!r}")
            specs = header["arrays"]
            if set(z.files) != set(specs) | {_HEADER}:
                raise _Mismatch(f"holds arrays {sorted(set(z.files) - {_HEADER})}, its header {sorted(specs)}")
            arrays = {}
            for name, spec in specs.items():
                a = z[name]
                got = {"dtype": a.dtype.str, "shape": list(a.shape), "nbytes": int(a.nbytes)}
                if any(got[k] != spec[k] for k in got):
                    raise _Mismatch(f"has {name} {got}, its header {spec}")
                if _crc(a) != spec["crc32"]:
                    raise _Mismatch(f"has {name} with another checksum than its header records")
                arrays[name] = a
            info = header.get("info") or {}
        if check is not None:
            check(arrays, info)
    except _Mismatch as err:
        _warn_once(path, str(err))
        return None
    except Exception as err:  # truncated, not a zip, bad JSON, check() refused: decode again
        _warn_once(path, f"is unreadable ({type(err).__name__}: {err})")
        return None
    try:
        os.utime(path)  # a read is a use (LRU)
    except OSError:
        pass  # someone else's shared cache: still usable
    return arrays, info


def save(path: Path, key: str, arrays: Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None,
         cap: int | None = None) -> bool:
    """Write an entry atomically (temp file, fsync, rename), then evict down to ``cap`` (default
    :func:`max_bytes`) keeping this entry. An unwritable cache only warns: caching is an optimisation."""
    cap = max_bytes() if cap is None else cap
    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    header = {
        "format": FORMAT,
        "key": key,
        "arrays": {n: {"dtype": a.dtype.str, "shape": list(a.shape), "nbytes": int(a.nbytes), "crc32": _crc(a)}
                   for n, a in arrays.items()},
        "info": dict(info or {}),
    }
    header_bytes = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_HEADER: header_bytes}, **arrays)  # numeric arrays only: nothing pickled
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a cache may be shared
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as err:
        warnings.warn(f"could not write data cache '{path}': {err}", stacklevel=2)
        return False
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    evict(path.parent, cap, keep=[path])
    return True


def _fsync_dir(folder: Path) -> None:
    # Makes the rename durable; not possible (nor needed) on every platform.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def get_or_build(path: Path, key: str, build: Callable[[], tuple[dict, dict]],
                 check: Callable[[dict, dict], None] | None = None) -> tuple[dict, dict]:
    """The entry for ``key`` at ``path``, or ``build()``'s ``(arrays, info)``, saved for next time.

    While building, the entry's lock is held, so concurrent callers wait and then read what this
    one wrote. An exception from ``build`` propagates and leaves nothing behind.
    """
    cap = max_bytes()
    if cap == 0:
        return build()
    before = _stat_id(path)
    found = load(path, key, check)
    if found is not None:
        return found
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # unwritable: decode unlocked; save() warns
    with _Lock(_lock_path(path)):
        if _stat_id(path) != before:  # another process wrote it while we waited
            found = load(path, key, check)
            if found is not None:
                return found
        arrays, info = build()
        save(path, key, arrays, info, cap)
    return arrays, info


def _stat_id(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def clear(cache_dir: Path) -> tuple[list[Entry], list[Entry]]:
    """Remove every entry (and stale temp files); returns (removed, skipped because being filled)."""
    removed, busy = [], []
    for entry in entries(cache_dir):
        outcome = _remove(entry.path)
        if outcome == "removed":
            removed.append(entry)
        else:
            busy.append(entry)
    for tmp in _stale_temps(cache_dir):
        tmp.unlink(missing_ok=True)
    return removed, busy


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _cap_text() -> str:
    try:
        cap = max_bytes()
    except ValueError as err:
        return str(err)
    where = f"from {MAX_BYTES_ENV}" if os.environ.get(MAX_BYTES_ENV, "").strip() else f"default; set {MAX_BYTES_ENV}"
    return ("off" if cap == 0 else _size(cap)) + f" ({where})"


def main(argv: list[str] | None = None, prog: str = "python -m batlit.data") -> int:
    """The cache's command line (``python -m batlit.data``); the exit status."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=None,
                        help="the cache folder (default: $XDG_CACHE_HOME/batlit or ~/.cache/batlit; "
                             "give data.cache_dir's value if a config sets one)")
    parser = argparse.ArgumentParser(prog=prog, description="batlit's decoded-data cache.",
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", parents=[common], help="every entry: last use, size, name; then the total")
    sub.add_parser("info", parents=[common], help="folder, number of entries, total size and cap")
    sub.add_parser("clear", parents=[common], help="remove every entry (files batlit did not write stay)")
    args = parser.parse_args(argv)
    cache_dir = (args.dir or default_cache_dir()).expanduser()
    listed = entries(cache_dir)
    total = sum(e.size for e in listed)
    if args.command == "list":
        if listed:
            print(f"{'last used':16}  {'size':>10}  entry (least recently used first)")
        for e in listed:
            print(f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(e.last_used))}  {_size(e.size):>10}  {e.path.name}")
    if args.command in ("list", "info"):
        print(f"{cache_dir}: {len(listed)} entries, {_size(total)}; cap {_cap_text()}")
        return 0
    removed, busy = clear(cache_dir)
    print(f"{cache_dir}: removed {len(removed)} entries, {_size(sum(e.size for e in removed))}")
    for e in busy:
        print(f"kept {e.path.name}: a process is writing it, or it could not be removed", file=sys.stderr)
    return 1 if busy else 0


if __name__ == "__main__":  # the older spelling of python -m batlit.data
    sys.exit(main(prog="python -m batlit.data.cache"))
