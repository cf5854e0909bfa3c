"""The decoded-data cache (batlit.data.cache): size cap with LRU eviction, the clear command,
verified reads, atomic writes and one decode for concurrent fills."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from batlit.data import ImageFolderDataModule
from batlit.data import cache
from batlit.data import image_folder as image_folder_mod


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # Default caches must never land in the real ~/.cache during tests.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(cache.MAX_BYTES_ENV, raising=False)
    cache._warned.clear()


def _arrays(seed: int, n: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)  # random bytes: an entry's size is then about n
    return {"x": rng.integers(0, 256, n, dtype=np.uint8), "y": np.arange(4, dtype=np.int64)}


def _entry(folder: Path, name: str) -> tuple[Path, str]:
    key = cache.cache_key(name)
    return folder / f"test-{name}-{key}.npz", key


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_lru_eviction_keeps_recently_used_and_foreign_files(tmp_path, monkeypatch):
    d = tmp_path / "c"
    a, b, c, new = (_entry(d, n) for n in "abcd")
    for i, (path, key) in enumerate((a, b, c)):
        assert cache.save(path, key, _arrays(i), cap=10**9)
    size = a[0].stat().st_size
    now = time.time()
    for age, (path, _) in zip((300, 200, 100), (a, b, c)):  # a oldest, c newest
        os.utime(path, (now - age, now - age))
    d.joinpath("notes.npz").write_bytes(b"x" * 10 * size)  # not batlit's: never counted nor removed
    d.joinpath("mine-123.npz").write_bytes(b"x")
    os.utime(d / "notes.npz", (now - 10**6, now - 10**6))

    assert cache.load(*a) is not None  # a read is a use: now b is the least recently used
    assert a[0].stat().st_mtime > now - 5
    monkeypatch.setenv(cache.MAX_BYTES_ENV, str(3 * size + size // 2))
    assert cache.save(*new, _arrays(3))
    assert _names(d) == sorted(["mine-123.npz", "notes.npz", a[0].name, c[0].name, new[0].name])

    # An entry over the cap alone is kept (it is the one being written); all others go.
    monkeypatch.setenv(cache.MAX_BYTES_ENV, "10")
    assert cache.save(*b, _arrays(4))
    assert _names(d) == sorted(["mine-123.npz", "notes.npz", b[0].name])
    assert cache.load(*b)[0]["x"].tobytes() == _arrays(4)["x"].tobytes()


def test_cap_parsing_and_off_switch(tmp_path, monkeypatch):
    for raw, want in (("", cache.DEFAULT_MAX_BYTES), ("1234", 1234), ("500M", 500 * 2**20), ("2g", 2 * 2**30),
                      ("1.5GiB", int(1.5 * 2**30))):
        monkeypatch.setenv(cache.MAX_BYTES_ENV, raw)
        assert cache.max_bytes() == want
    monkeypatch.setenv(cache.MAX_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match=cache.MAX_BYTES_ENV):
        cache.max_bytes()
    monkeypatch.setenv(cache.MAX_BYTES_ENV, "0")
    path, key = _entry(tmp_path / "c", "a")
    got, _ = cache.get_or_build(path, key, lambda: (_arrays(0), {}))
    assert np.array_equal(got["x"], _arrays(0)["x"]) and not (tmp_path / "c").exists()


def test_clear_command_lists_and_removes_only_entries(tmp_path, capsys):
    d = tmp_path / "c"
    for i, n in enumerate("ab"):
        cache.save(*_entry(d, n), _arrays(i), cap=10**9)
    (d / "keep-me.txt").write_text("mine")
    assert cache.main(["list", "--dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert _entry(d, "a")[0].name in out and _entry(d, "b")[0].name in out and "2 entries" in out
    assert "keep-me" not in out and "cap 2.0 GiB" in out
    assert cache.main(["info", "--dir", str(d)]) == 0
    assert "2 entries" in capsys.readouterr().out
    assert cache.main(["clear", "--dir", str(d)]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert _names(d) == ["keep-me.txt"]
    cache.main(["--dir", str(d), "info"])
    assert "0 entries" in capsys.readouterr().out


def _rewrite(path: Path, change) -> None:
    """Rewrite an entry's npz members after ``change(members, header)`` edits them in place."""
    with np.load(path, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    header = json.loads(members.pop("__batlit_cache__").tobytes())
    change(members, header)
    members["__batlit_cache__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **members)


def _flip_byte(members, header):
    members["x"] = members["x"].copy()
    members["x"][7] ^= 1


def _other_shape(members, header):
    members["x"] = members["x"].reshape(10, -1)


def _no_header(members, header):
    header.clear()


@pytest.mark.parametrize("damage", ["truncated", "other key", "other shape", "flipped byte", "old format"])
def test_damaged_or_mismatched_entry_is_rebuilt_not_used(tmp_path, damage):
    path, key = _entry(tmp_path / "c", "a")
    cache.save(path, key, _arrays(0), cap=10**9)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "other key":  # an entry for other settings under this name
        other, other_key = _entry(tmp_path / "c", "b")
        cache.save(other, other_key, _arrays(1), cap=10**9)
        os.replace(other, path)
    elif damage == "old format":  # batlit's earlier entries: arrays, no header
        with np.load(path) as z:
            np.savez(path, x=z["x"], y=z["y"])
    else:
        _rewrite(path, {"other shape": _other_shape, "flipped byte": _flip_byte}[damage])
    builds = []
    with pytest.warns(UserWarning, match="decoding again") as record:
        got, _ = cache.get_or_build(path, key, lambda: (builds.append(1), (_arrays(0), {}))[1])
        cache.load(path, "x" * 20)  # another problem with the same entry: its own warning
        cache.load(path, "x" * 20)  # the same problem again: warned once
    assert len(record) == 2 and str(path) in str(record[0].message)
    assert builds == [1] and np.array_equal(got["x"], _arrays(0)["x"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cache.load(path, key)  # rebuilt and overwritten: valid now
    assert again is not None and np.array_equal(again[0]["x"], _arrays(0)["x"])


def test_truncated_image_folder_entry_is_decoded_again(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    for split in ("train", "test"):
        for k, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (4, 4), (100 * k, 10 * i, 0)).save(root / split / cls / f"{i}.png")
    first = ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "c"))
    first.setup()
    (entry,) = (tmp_path / "c").glob("image_folder-*.npz")
    entry.write_bytes(entry.read_bytes()[:-100])
    calls = []
    decode = image_folder_mod.decode_images
    monkeypatch.setattr(image_folder_mod, "decode_images", lambda *a, **k: (calls.append(1), decode(*a, **k))[1])
    with pytest.warns(UserWarning, match="decoding again"):
        second = ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "c"))
        second.setup()
    assert len(calls) == 2 and torch.equal(second.train_x, first.train_x)
    third = ImageFolderDataModule(root=str(root), cache_dir=str(tmp_path / "c"))
    third.setup()  # the rewritten entry is whole: no more decoding
    assert len(calls) == 2 and torch.equal(third.test_x, first.test_x)


def test_atomic_write_leaves_no_temp_file_and_keeps_the_old_entry(tmp_path, monkeypatch):
    path, key = _entry(tmp_path / "c", "a")
    assert cache.save(path, key, _arrays(0), cap=10**9)
    assert _names(tmp_path / "c") == [path.name]  # no temp or lock file left

    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 half an entry")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.np, "savez", failing_savez)
    with pytest.warns(UserWarning, match="No space left"):
        assert not cache.save(path, key, _arrays(1), cap=10**9)
    assert _names(tmp_path / "c") == [path.name]
    assert np.array_equal(cache.load(path, key)[0]["x"], _arrays(0)["x"])  # the old entry is intact


def _fill(path: str, key: str, barrier, log: str, out: str) -> None:
    """One of two processes filling the same entry at once (a module-level target for spawn)."""

    def build():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # a slow decode: the other process arrives meanwhile
        return _arrays(7, 200_000), {"who": os.getpid()}

    barrier.wait()
    arrays, _ = cache.get_or_build(Path(path), key, build)
    np.save(out, arrays["x"])


def test_two_processes_filling_one_entry_decode_once_and_agree(tmp_path):
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    path, key = _entry(tmp_path / "c", "a")
    log = tmp_path / "builds.log"
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_fill, args=(str(path), key, barrier, str(log), str(tmp_path / f"out{i}.npy")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    if cache.fcntl is not None:
        assert len(log.read_text().split()) == 1  # the second process waited and read the entry
    got = [np.load(tmp_path / f"out{i}.npy") for i in range(2)]
    assert np.array_equal(got[0], got[1]) and np.array_equal(got[0], _arrays(7, 200_000)["x"])
    assert _names(tmp_path / "c") == [path.name]  # one entry; no temp or lock files
    assert np.array_equal(cache.load(path, key)[0]["x"], got[0])


def test_a_failed_build_leaves_nothing(tmp_path):
    path, key = _entry(tmp_path / "c", "a")

    def build():
        raise ValueError("bad image")

    with pytest.raises(ValueError, match="bad image"):
        cache.get_or_build(path, key, build)
    assert _names(tmp_path / "c") == []


@pytest.mark.parametrize("module", ["batlit.data", "batlit.data.cache"])
def test_command_line_runs_as_a_module(module, tmp_path, monkeypatch, capsys):
    """``python -m batlit.data`` (data/__main__.py) and the older ``python -m batlit.data.cache``."""
    import runpy
    import warnings

    d = tmp_path / "c"
    cache.save(*_entry(d, "a"), _arrays(0), cap=10**9)
    monkeypatch.setattr("sys.argv", [module, "info", "--dir", str(d)])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as done:
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: batlit.data.cache is already imported here
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert done.value.code == 0 and f"{d}: 1 entries" in capsys.readouterr().out
    monkeypatch.setattr("sys.argv", [module, "--help"])
    with pytest.raises(SystemExit):
        runpy.run_module(module, run_name="__main__")
    assert f"usage: python -m {module} " in capsys.readouterr().out
