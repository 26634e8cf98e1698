"""Named architectures: one JSON file per name in ``architectures/``."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from .config import ClipConfig, ConfigError

_PACKAGE = "clipforge.configs.architectures"


@cache
def _architecture_files() -> dict[str, str]:
    files = resources.files(_PACKAGE)
    return {
        entry.name.removesuffix(".json"): entry.read_text(encoding="utf-8")
        for entry in files.iterdir()
        if entry.name.endswith(".json")
    }


def list_architectures() -> list[str]:
    """Names of all built-in architectures, sorted."""
    return sorted(_architecture_files())


def get_config(name: str) -> ClipConfig:
    """The validated config of a built-in architecture."""
    files = _architecture_files()
    if name not in files:
        raise ConfigError(
            f"unknown architecture {name!r}; available: {', '.join(list_architectures())}"
        )
    try:
        return ClipConfig.from_dict(json.loads(files[name]))
    except (ConfigError, TypeError, json.JSONDecodeError) as err:
        raise ConfigError(f"invalid config file for architecture {name!r}: {err}") from err
