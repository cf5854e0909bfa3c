"""Rewrite a wheel without the files under some folders, its RECORD to match: what a GPU slot
carries must fit 64 MiB with the CIFAR-10 zips (``make gpu-wheels``, docs/performance.md).

    python scripts/slim_wheel.py .wheels/pyautoattack-0.2.0-py3-none-any.whl --drop pyautoattack/examples/

pyautoattack's wheel is 42 MB, nearly all of it ``examples/`` (a test model and a TensorFlow weight
file that ``import autoattack``/``pyautoattack`` never opens). The wheel keeps its name, so pip
installs it as before; the file is replaced by temp file + rename.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path


def slim(wheel: Path, drop: list[str]) -> tuple[int, int]:
    """Remove the members under each prefix in ``drop`` (and their RECORD lines); returns the
    sizes before and after. Refuses a wheel without a RECORD or a prefix that matches nothing."""
    before = wheel.stat().st_size
    with zipfile.ZipFile(wheel) as src:
        names = src.namelist()
        records = [n for n in names if n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise SystemExit(f"{wheel}: not a wheel (found {len(records)} .dist-info/RECORD)")
        for prefix in drop:
            if not any(n.startswith(prefix) for n in names):
                raise SystemExit(f"{wheel}: nothing under '{prefix}' to drop")
        gone = {n for n in names if any(n.startswith(p) for p in drop)}
        record = src.read(records[0]).decode("utf-8").splitlines()
        kept_record = [line for line in record if line.split(",", 1)[0] not in gone]
        fd, tmp = tempfile.mkstemp(prefix=f".{wheel.name}.", suffix=".tmp", dir=wheel.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
                for info in src.infolist():
                    if info.filename in gone:
                        continue
                    data = ("\n".join(kept_record) + "\n").encode("utf-8") if info.filename == records[0] \
                        else src.read(info)
                    dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            os.chmod(tmp, wheel.stat().st_mode & 0o777)  # mkstemp made it 0600
            os.replace(tmp, wheel)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return before, wheel.stat().st_size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--drop", action="append", required=True, help="a folder inside the wheel, e.g. pkg/examples/")
    args = parser.parse_args(argv)
    before, after = slim(args.wheel, args.drop)
    print(f"{args.wheel.name}: {before / 2**20:.1f} MiB -> {after / 2**20:.2f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
