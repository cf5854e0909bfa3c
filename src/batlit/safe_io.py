"""Files in folders that travel: write without following links, read only bounded regular files.

A run folder is something people download and share (docs/reliability.md, Trust). Anything in it
may be a symbolic link, a FIFO or a device placed there by someone else, so every harness output is
written to a fresh temporary file beside its target and ``os.replace``\\ d over it (a link in the
target's place is replaced, never followed), and every input is opened without following links,
checked to be a regular file inside the folder, and read up to a size bound.

Each refusal is a :class:`UnsafeFileError`: one line naming the path and why.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Iterator

from .config import ConfigError

# bounds for the small text files a run folder holds (config.yaml, metrics.json, eval_*.json)
MAX_TEXT_BYTES = 64 * 2**20


class UnsafeFileError(ConfigError):
    """A path that is a link, not a regular file, outside its folder, or too large."""


def check_out_dir(path: str | Path, inside: str | Path | None = None, create: bool = True) -> Path:
    """An output folder that is not a link and, when ``inside`` is given, resolves inside it.

    Refuses a folder that is itself a symbolic link, or any existing component below ``inside`` that
    is one, so nothing is written through a link placed in a shared run folder.
    """
    path = Path(path)
    if inside is not None:
        base = Path(inside)
        try:
            rel = path.absolute().relative_to(base.absolute())
        except ValueError:
            raise UnsafeFileError(f"{path}: output folder is not inside {base}") from None
        cur = base
        for part in rel.parts:
            cur = cur / part
            if cur.is_symlink():
                raise UnsafeFileError(f"{cur}: output folder is a symbolic link; refusing to write through it")
        if not path.resolve().is_relative_to(base.resolve()):
            raise UnsafeFileError(f"{path}: output folder resolves outside {base}")
    if path.is_symlink():
        raise UnsafeFileError(f"{path}: output folder is a symbolic link; refusing to write through it")
    if path.exists() and not path.is_dir():
        raise UnsafeFileError(f"{path}: output folder exists and is not a folder")
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a new temporary file in ``path``'s folder, fsync, ``os.replace`` over ``path``.

    A link at ``path`` is replaced by the file, its target untouched; a kill leaves the old file or
    the new one. The folder itself must not be a link (:func:`check_out_dir`).
    """
    path = Path(path)
    if path.parent.is_symlink():
        raise UnsafeFileError(f"{path.parent}: output folder is a symbolic link; refusing to write through it")
    if path.is_dir() and not path.is_symlink():
        raise UnsafeFileError(f"{path}: is a folder, not a file")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; results are shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_regular_bytes(path: str | Path, inside: str | Path | None = None,
                       max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a regular file, opened without following a final link, at most ``max_bytes``.

    ``inside``: the folder the file must resolve into (a run folder); a link anywhere on the way
    that leads out of it, a FIFO, a device or an oversized file is refused before reading.
    """
    path = Path(path)
    if inside is not None and not path.resolve().is_relative_to(Path(inside).resolve()):
        raise UnsafeFileError(f"{path}: resolves outside {inside}; refusing to read it")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as err:  # ELOOP: the final component is a link
        raise UnsafeFileError(f"{path}: not a regular file ({err.strerror}); refusing to read it") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{path}: not a regular file; refusing to read it")
        if st.st_size > max_bytes:
            raise UnsafeFileError(f"{path}: {st.st_size} bytes, more than the {max_bytes} allowed")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UnsafeFileError(f"{path}: more than the {max_bytes} bytes allowed")
    return data


def read_regular_text(path: str | Path, inside: str | Path | None = None, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """:func:`read_regular_bytes` decoded as UTF-8 (an undecodable file is refused in one line)."""
    try:
        return read_regular_bytes(path, inside, max_bytes).decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnsafeFileError(f"{path}: not UTF-8 text ({err.reason})") from None


@contextlib.contextmanager
def atomic_text_writer(path: str | Path) -> Iterator[io.StringIO]:
    """``with atomic_text_writer(path) as f:`` collects text (``newline=""``, as for ``csv``) and
    writes it with :func:`atomic_write_text` when the block ends without an error."""
    buf = io.StringIO(newline="")
    yield buf
    atomic_write_text(path, buf.getvalue())


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig`` into memory, then :func:`atomic_write_bytes`: a link at ``path`` is replaced."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


# a spreadsheet reads a cell starting with one of these as a formula (OWASP, "CSV Injection")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet shows as text: one starting like a formula gets a leading ``'``
    (OWASP's advice for CSV injection); numbers and empty cells are unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def printable(text: str) -> str:
    """``text`` for a terminal: control characters (escape sequences among them) shown as ``\\xNN``,
    newlines and tabs kept."""
    return "".join(ch if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf") else ascii(ch)[1:-1]
                   for ch in text)


def read_plain_yaml(path: str | Path, inside: str | Path | None = None, max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """A YAML file (a run's ``config.yaml``) read as :func:`read_regular_text` and parsed with
    ``yaml.SafeLoader``, refusing anchors and aliases: OmegaConf never writes them, and a few KB
    of nested aliases (a "billion laughs") expand to more values than memory holds when walked."""
    import yaml

    text = read_regular_text(path, inside, max_bytes)

    class _NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
                raise UnsafeFileError(f"{path}: holds YAML anchors or aliases (&, *), which batlit never writes; "
                                      "refusing to expand them")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise UnsafeFileError(f"{path}: not valid YAML ({str(err).splitlines()[0][:120]})") from None
