"""Read the keys an offline W&B run logged, straight from its ``run-*.wandb`` file (no network).

The file is a LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of records with a
7-byte header: CRC32, length, type) whose payloads are ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, chunks, out = 7, b"", []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0:  # zero padding to the end of the block
            pos += left - 7
            continue
        chunks += data[pos:pos + length]
        pos += length
        if kind in (FULL, LAST):
            out.append(chunks)
            chunks = b""
    return out


def logged_keys(run_dir: Path) -> dict[str, set[str]]:
    """``{"history": ..., "summary": ..., "config": ...}`` key sets of the one offline run under run_dir."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    keys: dict[str, set[str]] = {"history": set(), "summary": set(), "config": set()}

    def name(item) -> str:
        return item.key or "/".join(item.nested_key)

    for payload in records(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            keys["history"] |= {name(i) for i in record.history.item}
        elif kind == "summary":
            keys["summary"] |= {name(i) for i in record.summary.update}
        elif kind == "config":
            keys["config"] |= {name(i) for i in record.config.update}
        elif kind == "run":
            keys["config"] |= {name(i) for i in record.run.config.update}
    return keys
