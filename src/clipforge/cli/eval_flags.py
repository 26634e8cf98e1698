"""``clipforge eval TASK`` commands generated from the evaluator registry.

Each registered evaluator (built-in or third-party) becomes a command; each field of its
options dataclass with a scalar type becomes a ``--field-name`` flag (others, lists and
mappings, are given as ``--option KEY=VALUE`` with a JSON value). A ``*_data`` mapping field
(a second dataset, e.g. ``linear_probe``'s ``test_data``) becomes a path flag. The group
imports the evaluators (and torch) only when ``clipforge eval`` itself runs, so
``clipforge --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import typer
from typer.core import TyperGroup

from .errors import friendly_errors

#: option fields the common flags already cover (``--batch-size``, ``--precision``)
COMMON_FIELDS = ("batch_size", "precision")
_SCALARS = (int, float, str, bool)


def option_flags(options_class: type) -> list[inspect.Parameter]:
    """A keyword parameter (typer option) for each flag-able field of ``options_class``."""
    hints = typing.get_type_hints(options_class)
    params = []
    for field in dataclasses.fields(options_class):
        if field.name in COMMON_FIELDS:
            continue
        annotation = _flag_type(field.name, hints[field.name])
        if annotation is None:
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = _help(options_class, field)
        params.append(
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(None, flag, help=help_text),
                annotation=annotation,
            )
        )
    return params


def _flag_type(name: str, hint: Any) -> Any:
    """The flag's type for a field type (``None``: no flag, use ``--option``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if name.endswith("_data") and (origin is dict or hint is dict):
        return Path
    if hint in _SCALARS:
        return hint
    if origin is Literal:
        return str
    if origin in (typing.Union, types.UnionType):
        scalars = [a for a in args if a in _SCALARS or typing.get_origin(a) is Literal]
        if scalars:  # e.g. ``int | None``; ``str | list[str] | None`` takes the string form
            first = scalars[0]
            return str if typing.get_origin(first) is Literal else first
    return None


def _help(options_class: type, field: dataclasses.Field) -> str:
    default = field.default if field.default is not dataclasses.MISSING else None
    return f"{options_class.__module__.rsplit('.', 1)[-1]} option (default: {default!r})."


def make_command(
    base: Callable[..., None], options_class: type, doc: str
) -> Callable[..., None]:
    """``base`` (whose last parameter is ``**flags``) with a signature that adds a typer
    option per flag-able field; the values given arrive in ``flags``."""
    signature = inspect.signature(base)
    fixed = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    params = [*fixed, *option_flags(options_class)]

    def command(**kwargs: Any) -> None:
        given = {p.name: kwargs.pop(p.name) for p in params[len(fixed) :]}
        base(**kwargs, **{k: v for k, v in given.items() if v is not None})

    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    return command


class EvaluatorGroup(TyperGroup):
    """The ``eval`` group: its fixed commands plus one per registered evaluator, built on
    first use from :func:`make_task_command` (set by :mod:`clipforge.cli.evaluate`)."""

    make_task_command: Callable[[str], Callable[..., None]] | None = None

    def _tasks(self) -> list[str]:
        from ..eval import list_evaluators  # imports the evaluators (and torch)

        return list_evaluators()

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self._tasks(), *super().list_commands(ctx)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in self._tasks() or not self.make_task_command:
            return command
        single = typer.Typer(add_completion=False)
        single.command(name=cmd_name)(friendly_errors(self.make_task_command(cmd_name)))
        return typer.main.get_command(single)
