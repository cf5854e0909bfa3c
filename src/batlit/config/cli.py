"""What the entry points share on the command line: a user error as one line and its exit status,
a mandatory key asked for in one line, and output folders that are links refused before Hydra writes."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, UserError

T = TypeVar("T")


def exit_on_user_error(run: Callable[..., T], *args: Any) -> T:
    """Run an entry point; a :class:`UserError` becomes one line on stderr and its exit status."""
    try:
        return run(*args)
    except UserError as err:
        print(f"batlit: {err.kind}: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def require_on_command_line(key: str, example: str) -> None:
    """One line when a mandatory key is not given. Hydra reports a missing ``???`` value that the
    output folder interpolates (``ckpt``) as a long traceback, before any batlit code runs."""
    args = sys.argv[1:]
    own_config = ("-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--config-name", "-cn",
                  "--config-dir", "-cd", "--shell-completion", "-sc")
    if any(a.split("=", 1)[0] in own_config for a in args):
        return  # help, printing the config, or a config of the user's own that may set the key
    if not any(a.split("=", 1)[0].lstrip("+~") == key for a in args):
        print(f"batlit: config error: {key} is required, e.g. {example}", file=sys.stderr)
        sys.exit(2)


def refuse_linked_outputs(folder: str | Path, job_name: str | None = None, output_subdir: str | None = None,
                          extra: tuple[str, ...] = ()) -> None:
    """Refuse, as one :class:`ConfigError`, an output folder that is a link or not a folder, or a
    link (or anything but a regular file) where Hydra writes its own files into it: the job log
    ``<job_name>.log``, ``<output_subdir>/{config,hydra,overrides}.yaml`` and ``extra`` names.
    Hydra opens these without care for links, so this runs before Hydra writes (:class:`RefuseLinkedOutputs`)."""
    folder = Path(folder)
    if folder.is_symlink():
        raise ConfigError(f"{folder}: output folder is a symbolic link; refusing to write through it")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: output folder exists and is not a folder")
    names = [*extra, *([f"{job_name}.log"] if job_name else [])]
    if output_subdir:
        sub = folder / output_subdir
        if sub.is_symlink() or (sub.exists() and not sub.is_dir()):
            raise ConfigError(f"{sub}: Hydra's output folder is a link or not a folder; refusing to write through it")
        names += [f"{output_subdir}/{n}" for n in ("config.yaml", "hydra.yaml", "overrides.yaml")]
    for name in names:
        try:
            mode = os.lstat(folder / name).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{folder / name}: is a link or not a regular file; refusing to write through it")


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra is a dependency
    _HydraCallback = object


class RefuseLinkedOutputs(_HydraCallback):
    """Hydra callback (``hydra.callbacks``): before Hydra creates the run folder or writes ``.hydra/``
    and the job log, refuse an output folder that is a link, or links where those files go
    (:func:`refuse_linked_outputs`); one line on stderr, exit status 2. A run folder is something
    people download and share (docs/reliability.md, Trust)."""

    def _check(self, config: DictConfig, folder_key: str, extra: tuple[str, ...] = ()) -> None:
        try:
            folder = OmegaConf.select(config, folder_key)
            job = OmegaConf.select(config, "hydra.job.name", default=None)
            subdir = OmegaConf.select(config, "hydra.output_subdir", default=None)
        except Exception:  # noqa: BLE001 - a config Hydra cannot resolve: Hydra reports it itself
            return
        if folder is None:
            return
        exit_on_user_error(refuse_linked_outputs, folder, job, subdir, extra)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir", ("multirun.yaml",))
