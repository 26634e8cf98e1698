"""Named architectures: one JSON file per name in ``architectures/``, plus the user's own.

A user's architecture is reachable everywhere a name is (``--model``, a training YAML's
``model.architecture``, ``create_model``): register it once with
:func:`register_architecture`, or name its JSON file's path directly.

A file may hold a ``"preprocess"`` section: the image preprocessing of its family (SigLIP:
squash resize, mean/std 0.5), used by a model created by name and by pretrained weights
that do not say otherwise (:func:`get_preprocess`); without one, OpenAI's CLIP pipeline.
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
_USER_PREPROCESS: dict[str, dict[str, Any]] = {}
PREPROCESS_KEY = "preprocess"


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


def _parse_document(text: str, source: str) -> tuple[ClipConfig, dict[str, Any]]:
    """An architecture file's config and its ``preprocess`` section (``{}`` when absent)."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: not valid JSON: {err}") from err
    try:
        preprocess = data.pop(PREPROCESS_KEY, {}) if isinstance(data, dict) else {}
        config = ClipConfig.from_dict(data)
        return config, _checked_preprocess(preprocess, config)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{source}: invalid architecture: {err}") from err


def _checked_preprocess(section: Any, config: ClipConfig) -> dict[str, Any]:
    """The ``preprocess`` section, validated as a preprocessing config of the image size."""
    from ..preprocess.config import PreprocessConfig  # preprocess builds on configs

    if not isinstance(section, dict):
        raise ConfigError(f"'{PREPROCESS_KEY}' must be a mapping, got {type(section).__name__}")
    if "image_size" in section or "size" in section:
        raise ConfigError(f"'{PREPROCESS_KEY}' takes its image size from vision.image_size")
    PreprocessConfig.from_dict({"image_size": config.vision.image_size, **section})
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def read_architecture_file(path: str | Path) -> ClipConfig:
    """The validated architecture in a JSON file (same schema as the built-in ones)."""
    return _read_document(path)[0]


def _read_document(path: str | Path) -> tuple[ClipConfig, dict[str, Any]]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read architecture file {path}: {err}") from err
    return _parse_document(text, str(path))


def is_architecture_file(name: str | Path) -> bool:
    """Whether ``name`` is the path of an architecture JSON file (not a checkpoint)."""
    path = Path(name)
    return path.suffix.lower() == ".json" and path.is_file()


def register_architecture(
    source: str | Path | ClipConfig | dict[str, Any], name: str | None = None
) -> str:
    """Make an architecture available by name; returns the name.

    ``source`` is a JSON file (named after its stem unless ``name`` is given), a config
    dict or a :class:`ClipConfig`; a file or dict may hold a ``preprocess`` section.
    Built-in names cannot be shadowed.
    """
    preprocess: dict[str, Any] = {}
    if isinstance(source, ClipConfig):
        config = source
    elif isinstance(source, dict):
        source = dict(source)
        section = source.pop(PREPROCESS_KEY, {})
        config = ClipConfig.from_dict(source)
        preprocess = _checked_preprocess(section, config)
    else:
        config, preprocess = _read_document(source)
        name = name or Path(source).stem
    if not name:
        raise ConfigError("register_architecture needs a name for a dict or ClipConfig source")
    if name in _architecture_files():
        raise ConfigError(f"architecture {name!r} is built in; register it under another name")
    _USER_ARCHITECTURES[name] = config
    _USER_PREPROCESS[name] = preprocess
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
    return _builtin(resolved)[0]


def get_preprocess(name: str | Path) -> dict[str, Any]:
    """The image preprocessing an architecture declares for its family: a
    :class:`~clipforge.preprocess.PreprocessConfig` dict with its ``image_size``."""
    if is_architecture_file(name):
        config, section = _read_document(name)
    else:
        resolved = resolve_architecture_name(str(name))
        if resolved is None:
            raise unknown_architecture(str(name))
        if resolved in _USER_ARCHITECTURES:
            config, section = _USER_ARCHITECTURES[resolved], _USER_PREPROCESS[resolved]
        else:
            config, section = _builtin(resolved)
    return {"image_size": config.vision.image_size, **section}


@cache
def _builtin(name: str) -> tuple[ClipConfig, dict[str, Any]]:
    return _parse_document(_architecture_files()[name], f"built-in architecture {name!r}")
