"""The harness's config: the checks before any training, the ``${batlit_...}`` resolvers, the
machine's fast paths and the entry points' one-line exit.

- :mod:`.validation`: :func:`validate`, range checks on the keys a user types most;
- :mod:`.resolvers`: the project root, run folders and names that conf/'s files interpolate;
- :mod:`.hardware`: the device and whether bf16 is fast on it (the fast paths' defaults);
- :mod:`.cli`: :func:`exit_on_user_error` and the refusal of linked output folders.

The errors are the library's (:mod:`batlit.errors`), re-exported here: ``except ConfigError``
catches the same class wherever it was raised.
"""

from ..errors import ConfigError, DataUnavailableError, UserError
from ..vocab import ATTACK_LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULERS
from .cli import RefuseLinkedOutputs, exit_on_user_error, refuse_linked_outputs, require_on_command_line
from .hardware import cpu_has_bf16, fast_bf16, fast_precision, gpu_or, on_gpu, resolve_device
from .resolvers import kept_classes, project_root, register_resolvers, run_dir_of, run_name, sweep_group
from .validation import validate

__all__ = ["ATTACK_LOSSES", "OPTIMIZERS", "PRECISIONS", "SCHEDULERS", "ConfigError", "DataUnavailableError",
           "RefuseLinkedOutputs", "UserError", "cpu_has_bf16", "exit_on_user_error", "fast_bf16", "fast_precision",
           "gpu_or", "kept_classes", "on_gpu", "project_root", "refuse_linked_outputs", "register_resolvers",
           "require_on_command_line", "resolve_device", "run_dir_of", "run_name", "sweep_group", "validate"]
