"""The package's own errors: one base, so callers (the CLI, the HTTP service) can tell an
expected failure (bad input, a wrong option, a locked index) from a bug.

``exit_code`` is what the CLI exits with after printing the one-line message: 2 for a usage
error (a wrong option value, an unknown name), 1 for an input that could not be processed.
``http_status`` is what the HTTP service answers with.
"""

from __future__ import annotations

__all__ = ["ClipforgeError", "ConfigError", "InputError", "UsageError"]


class ClipforgeError(Exception):
    """Base of every error clipforge raises on purpose (never for a bug)."""

    exit_code: int = 1
    http_status: int = 400


class UsageError(ClipforgeError, ValueError):
    """A wrong option or argument: printed as one line, exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration is malformed: the message names the key and what is allowed."""


class InputError(ClipforgeError):
    """An input that could not be processed (a file, a database, a service): exit code 1."""

    exit_code = 1
