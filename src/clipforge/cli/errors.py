"""One-line errors for ordinary mistakes; ``--debug`` (or ``CLIPFORGE_DEBUG=1``) shows tracebacks.

Exit codes: 2 for usage errors (a wrong option value, an unknown name, an unreadable
option file), 1 for failed inputs (an unreadable checkpoint or image, an I/O error).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from ..errors import ClipforgeError, InputError as InputError, UsageError as UsageError

F = TypeVar("F", bound=Callable[..., Any])
_stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 100_000)
_state = {"debug": False}





def set_debug(enabled: bool) -> None:
    """Show full tracebacks instead of one-line errors."""
    _state["debug"] = enabled


def debug_enabled() -> bool:
    return _state["debug"] or os.environ.get("CLIPFORGE_DEBUG", "") not in ("", "0")


def warn(message: str) -> None:
    """A yellow ``warning:`` line on stderr."""
    _stderr.print(Text.assemble(("warning: ", "yellow"), message))


def friendly_errors(command: F) -> F:
    """Wrap a command: a :class:`~clipforge.errors.ClipforgeError` becomes one ``error:``
    line and its exit code (2 usage, 1 input); anything else is a bug and keeps its
    traceback (typer's own usage errors are typer's to print)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ClipforgeError as err:
            if debug_enabled():
                raise
            message = str(err) or type(err).__name__
            _stderr.print(Text.assemble(("error: ", "red"), message.replace("\n", " ")))
            raise typer.Exit(code=err.exit_code) from None

    return wrapper  # type: ignore[return-value]
