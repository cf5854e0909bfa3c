"""The user errors batlit raises: one line that names the offending key, path or value.

A leaf of the library (it imports nothing from batlit): the core packages raise these, and the
harness's entry points (:func:`batlit.config.exit_on_user_error`) print them as one line on stderr
and exit with their ``exit_code``.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake or missing resource the user can fix; entry points print it as one line."""

    kind = "error"
    exit_code = 1


class ConfigError(UserError, ValueError):
    """A user mistake in the composed config."""

    kind = "config error"
    exit_code = 2


class DataUnavailableError(UserError, RuntimeError):
    """The dataset's files are missing and could not be obtained (e.g. no internet).

    The message is one line that names the data path and says how to get the files.
    """

    kind = "data error"
    exit_code = 1
