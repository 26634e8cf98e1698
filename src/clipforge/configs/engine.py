"""The one config engine: plain dicts (JSON, YAML, ``a.b=value`` overrides) → validated dataclasses.

Every configuration in clipforge — architectures, preprocessing, training runs, data-source
and evaluator options — is a dataclass built by :func:`build`, which

- rejects unknown keys with a did-you-mean hint and the list of valid keys,
- coerces values to the annotated types (``"1e-3"`` → ``0.001``, ``"true"`` → ``True``,
  ``"0.9,0.98"`` → ``(0.9, 0.98)``; ``Literal`` choices with a did-you-mean hint),
- checks numeric ranges declared on the field with :func:`bounded`,

all before anything is built from the config. Errors are :class:`ConfigError` naming the
dotted key (``optim.grad_clip_norm``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from ..errors import ConfigError  # defined once for the whole package
from ..registry import did_you_mean, unknown_name

__all__ = [
    "ConfigError",
    "apply_override",
    "bounded",
    "Coerce",
    "build",
    "check_keys",
    "check_ranges",
    "did_you_mean",
    "unknown_name",
]




# ----------------------------------------------------------------------------- ranges
_RANGE_KEY = "clipforge_range"


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field whose numeric value (or every element of a tuple) must lie in range."""
    limits = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    metadata = {_RANGE_KEY: {k: v for k, v in limits.items() if v is not None}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_CHECKS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def _check_value(key: str, value: Any, limits: dict[str, float]) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, tuple | list):
        for i, item in enumerate(value):
            _check_value(f"{key}[{i}]", item, limits)
        return
    if not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
    for name, bound in limits.items():
        ok, symbol = _CHECKS[name]
        if not ok(value, bound):
            raise ConfigError(f"config key '{key}' must be {symbol} {bound}, got {value!r}")


def check_ranges(instance: Any, prefix: str = "") -> None:
    """Check every :func:`bounded` field of a dataclass instance (not recursive)."""
    for f in dataclasses.fields(instance):
        limits = f.metadata.get(_RANGE_KEY)
        if limits:
            key = f"{prefix}.{f.name}" if prefix else f.name
            _check_value(key, getattr(instance, f.name), limits)


# ----------------------------------------------------------------------------- names
def _unknown_key(prefix: str, key: str, valid: list[str], what: str = "config key") -> ConfigError:
    name = f"{prefix}.{key}" if prefix else key
    where = f"under '{prefix}'" if prefix else "at the top level"
    return ConfigError(
        f"unknown {what} '{name}'{did_you_mean(key, valid)}; valid keys {where}: {valid}"
    )


def check_keys(cls: type, data: Mapping[str, Any], prefix: str, what: str = "config key") -> None:
    """Raise a did-you-mean :class:`ConfigError` naming ``prefix.key`` for an unknown key."""
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in valid:
            raise _unknown_key(prefix, str(key), valid, what)


# ----------------------------------------------------------------------------- coercion
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _type_error(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config key '{key}': expected {expected}, got {value!r}")


def _to_int(value: Any, key: str) -> int:
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not number.is_integer():
        raise _type_error(key, value, "an integer")
    return int(number)


def _to_float(value: Any, key: str) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise _type_error(key, value, "a number") from None


def _coerce_scalar(value: Any, tp: type, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str | int) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise _type_error(key, value, "a boolean")
    if tp is int:
        return _to_int(value, key)
    if tp is float:
        return _to_float(value, key)
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise _type_error(key, value, "a string")
    if tp is dict or tp is Any:
        if tp is dict and not isinstance(value, dict):
            raise _type_error(key, value, "a mapping")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))


def _coerce_union(value: Any, args: tuple[Any, ...], key: str) -> Any:
    if _is_none(value) and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    for option in options:
        try:
            return coerce(value, option, key)
        except ConfigError:
            if len(options) == 1:
                raise
    names = [getattr(a, "__name__", str(a)) for a in args]
    raise ConfigError(f"config key '{key}': {value!r} matches none of the types {names}")


def _coerce_sequence(value: Any, origin: Any, args: tuple[Any, ...], key: str) -> Any:
    if isinstance(value, str):
        value = [v.strip() for v in value.strip("()[] ").split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise _type_error(key, value, "a list")
    if origin is list or (len(args) == 2 and args[1] is Ellipsis):
        item = args[0] if args else Any
        out = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if len(value) != len(args):
        raise _type_error(key, value, f"a list of {len(args)} values")
    return tuple(
        coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
    )


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to the annotated type ``tp`` (or a ConfigError naming ``key``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, key)
    if origin is Literal:
        if value not in args:
            hint = did_you_mean(str(value), [str(a) for a in args])
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}{hint}")
        return value
    if origin in (tuple, list):
        return _coerce_sequence(value, origin, args, key)
    if origin is dict:
        return _coerce_scalar(value, dict, key)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    return _coerce_scalar(value, tp, key)


#: ``coerce(value, annotated type, dotted key) -> value``: converts one config value
Coerce = Callable[[Any, Any, str], Any]


def build(
    cls: type,
    data: Any,
    prefix: str = "",
    coerce_value: Coerce | None = None,
    what: str = "config key",
) -> Any:
    """Instantiate dataclass ``cls`` from a mapping (``None``: empty; an instance is returned
    as is): unknown keys get a did-you-mean :class:`ConfigError` (``unknown <what>
    'prefix.key'``), values are converted to their annotated types (by ``coerce_value``,
    default :func:`coerce`) and :func:`bounded` ranges are checked. The one builder behind
    architectures, training configs, data-source and evaluator options."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _type_error(prefix or "<root>", data, "a mapping")
    check_keys(cls, data, prefix, what)
    convert = coerce_value or coerce
    hints = typing.get_type_hints(cls)
    kwargs = {k: convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        instance = cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{prefix or 'config'}: {err}") from None
    check_ranges(instance, prefix)
    return instance


# ----------------------------------------------------------------------------- overrides
def _parse_value(text: str) -> Any:
    try:
        import yaml

        return yaml.safe_load(text) if text.strip() else ""
    except ImportError:  # pragma: no cover - PyYAML is optional

        try:
            return json.loads(text)
        except ValueError:
            return text
    except Exception:  # noqa: BLE001 - a malformed YAML scalar: keep the raw string
        return text


def _dict_field(cls: type, name: str) -> bool:
    tp = typing.get_type_hints(cls)[name]
    options = (
        typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    )
    return any(o is dict or typing.get_origin(o) is dict for o in options)


def apply_override(data: dict[str, Any], override: str, root: type) -> None:
    """Set ``a.b.c=value`` in the raw config dict of dataclass ``root``, validating the path."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value")
    dotted, raw = override.split("=", 1)
    parts = [p for p in dotted.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {override!r} has an empty key")
    node, cls = data, root
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        if cls is not None:
            valid = [f.name for f in dataclasses.fields(cls)]
            if part not in valid:
                raise _unknown_key(prefix, part, valid)
        if depth == len(parts) - 1:
            node[part] = _parse_value(raw)
            return
        hint = typing.get_type_hints(cls)[part] if cls is not None else None
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # e.g. LoraConfig | None
            hint = next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), hint)
        child_cls = hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None
        if cls is not None and child_cls is None and not _dict_field(cls, part):
            raise ConfigError(f"config key '{'.'.join(parts[: depth + 1])}' has no sub-keys")
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node, cls = node[part], child_cls
