"""Typed option dataclasses from plain dicts, for the data-source and evaluator registries.

Both registries map a name to ``(options dataclass, function)``. This module holds what they
share: did-you-mean errors for unknown names and keys, building the options dataclass from
a dict (optionally through a config engine's ``coerce(value, type, key)``), and lazy
``"module:attribute"`` references so optional dependencies load only when used.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .configs.engine import (
    ConfigError,
    check_ranges,
    coerce as _engine_coerce,
    did_you_mean,
    unknown_name,
)

__all__ = ["Coerce", "build_options", "check_keys", "did_you_mean", "resolve", "unknown_name"]

#: ``coerce(value, annotated type, dotted key) -> value``: a config engine's converter.
Coerce = Callable[[Any, Any, str], Any]


def check_keys(cls: type, data: Mapping[str, Any], prefix: str, what: str = "option") -> None:
    """Raise a did-you-mean :class:`ConfigError` naming ``prefix.key`` for an unknown key."""
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in valid:
            raise ConfigError(
                f"unknown {what} '{prefix}.{key}'{did_you_mean(str(key), valid)}; "
                f"valid keys under '{prefix}': {valid}"
            )


def build_options(
    cls: type, data: Any, prefix: str, coerce: Coerce | None = None, what: str = "option"
) -> Any:
    """An instance of dataclass ``cls`` from ``data`` (a dict, ``None`` or already ``cls``).

    Unknown keys raise a did-you-mean :class:`ConfigError` (``unknown <what> 'prefix.key'``).
    Values are converted to their annotated types by ``coerce`` (default: the config
    engine's) and :func:`~clipforge.configs.engine.bounded` ranges are checked.
    """
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"'{prefix}' must be a mapping, got {data!r}")
    check_keys(cls, data, prefix, what)
    convert = coerce or _engine_coerce
    hints = typing.get_type_hints(cls)
    data = {k: convert(v, hints[k], f"{prefix}.{k}") for k, v in data.items()}
    try:
        instance = cls(**data)
    except TypeError as err:  # a required option is missing
        raise ConfigError(f"{prefix}: {err}") from None
    check_ranges(instance, prefix)
    return instance


def resolve(ref: Any) -> Any:
    """The object a ``"module:attribute"`` string names (imported now), or ``ref`` itself."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"{ref!r} needs module {module_name!r}, which failed: {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
