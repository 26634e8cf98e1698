"""Named architectures: one JSON file per name in ``architectures/``, plus the user's own.

A user's architecture is reachable everywhere a name is (``--model``, a training YAML's
``model.architecture``, ``create_model``): register it once with
:func:`register_architecture`, or name its JSON file's path directly.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .config import ClipConfig, ConfigError
from .engine import did_you_mean

_PACKAGE = "clipforge.configs.architectures"
_USER_ARCHITECTURES: dict[str, ClipConfig] = {}


@cache
def _architecture_files() -> dict[str, str]:
    files = resources.files(_PACKAGE)
    return {
        entry.name.removesuffix(".json"): entry.read_text(encoding="utf-8")
        for entry in files.iterdir()
        if entry.name.endswith(".json")
    }


def list_architectures() -> list[str]:
    """Names of all built-in and registered architectures, sorted."""
    return sorted({*_architecture_files(), *_USER_ARCHITECTURES})


def _parse(text: str, source: str) -> ClipConfig:
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: not valid JSON: {err}") from err
    try:
        return ClipConfig.from_dict(data)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{source}: invalid architecture: {err}") from err


def read_architecture_file(path: str | Path) -> ClipConfig:
    """The validated architecture in a JSON file (same schema as the built-in ones)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read architecture file {path}: {err}") from err
    return _parse(text, str(path))


def is_architecture_file(name: str | Path) -> bool:
    """Whether ``name`` is the path of an architecture JSON file (not a checkpoint)."""
    path = Path(name)
    return path.suffix.lower() == ".json" and path.is_file()


def register_architecture(
    source: str | Path | ClipConfig | dict[str, Any], name: str | None = None
) -> str:
    """Make an architecture available by name; returns the name.

    ``source`` is a JSON file (named after its stem unless ``name`` is given), a config
    dict or a :class:`ClipConfig`. Built-in names cannot be shadowed.
    """
    if isinstance(source, ClipConfig):
        config = source
    elif isinstance(source, dict):
        config = ClipConfig.from_dict(source)
    else:
        config = read_architecture_file(source)
        name = name or Path(source).stem
    if not name:
        raise ConfigError("register_architecture needs a name for a dict or ClipConfig source")
    if name in _architecture_files():
        raise ConfigError(f"architecture {name!r} is built in; register it under another name")
    _USER_ARCHITECTURES[name] = config
    return name


def resolve_architecture_name(name: str) -> str | None:
    """The registered name ``name`` refers to (exact, else unambiguous case-insensitive)."""
    names = list_architectures()
    if name in names:
        return name
    folded = [n for n in names if n.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def is_architecture(name: str | Path) -> bool:
    """Whether ``name`` names an architecture (registered name or architecture JSON file)."""
    return is_architecture_file(name) or resolve_architecture_name(str(name)) is not None


def unknown_architecture(name: str) -> ConfigError:
    """The error for a name that is neither an architecture nor a file."""
    return ConfigError(
        f"unknown architecture {name!r}{did_you_mean(name, list_architectures())}; "
        "`clipforge models` lists them (or pass a checkpoint path, or an architecture .json)"
    )


def get_config(name: str | Path) -> ClipConfig:
    """The validated config of a built-in or registered architecture, or of a JSON file."""
    if is_architecture_file(name):
        return read_architecture_file(name)
    resolved = resolve_architecture_name(str(name))
    if resolved is None:
        raise unknown_architecture(str(name))
    if resolved in _USER_ARCHITECTURES:
        return _USER_ARCHITECTURES[resolved]
    return _parse(_architecture_files()[resolved], f"built-in architecture {resolved!r}")
