"""Named architectures: one JSON file per name in ``architectures/``, plus the user's own.

A user's architecture is reachable everywhere a name is (``--model``, a training YAML's
``model.architecture``, ``create_model``): register it once with
:func:`register_architecture`, or name its JSON file's path directly.

A file may hold the defaults of its family, used by a model created by name and by
pretrained weights that do not say otherwise: a ``"preprocess"`` section (SigLIP: squash
resize, mean/std 0.5; without one, OpenAI's CLIP pipeline; :func:`get_preprocess`) and a
``"tokenizer"`` section (``{"kind": "sentencepiece", "hub_id": ...}``: the hub repository
of the family's ``tokenizer.json``; without one, CLIP's BPE; :func:`get_tokenizer_source`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from importlib import resources
from pathlib import Path
from typing import Any

from ..registry import Registry, did_you_mean
from .model_config import ClipConfig, ConfigError
from .preprocess import PreprocessConfig

_PACKAGE = "clipforge.configs.architectures"
PREPROCESS_KEY = "preprocess"
TOKENIZER_KEY = "tokenizer"
#: tokenizers an architecture or pretrained entry may name (CLIP's BPE is the default):
#: a hub repository's ``tokenizer.json`` read as SigLIP's releases need it
#: ("sentencepiece": canonicalised text) or as open_clip's ``HFTokenizer`` reads it ("hf":
#: whitespace-cleaned text, e.g. MetaCLIP 2's XLM-V); ``"clean"`` overrides the cleaning;
#: ``"strip_sep_token": true`` (kind "hf") writes 0 over every separator id, as open_clip's
#: ``HFTokenizer(strip_sep_token=True)`` does for CLIPA's BERT vocabulary
TOKENIZER_KINDS = ("sentencepiece", "hf")
#: text cleaning of each tokenizer kind, and the values a ``"clean"`` key may take
TOKENIZER_CLEAN = {"sentencepiece": "canonicalize", "hf": "whitespace"}
CLEAN_MODES = ("canonicalize", "whitespace", "none")


@dataclass(frozen=True)
class FamilyDefaults:
    """What an architecture file declares besides the model: preprocessing fields over
    :class:`~clipforge.preprocess.PreprocessConfig`'s, and the tokenizer's source."""

    preprocess: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, str] | None = None


ArchitectureLoader = Callable[[], "tuple[ClipConfig, FamilyDefaults]"]
#: architecture name -> a loader of its validated config and family defaults; built-in
#: JSON files are parsed on first use
ARCHITECTURES: Registry[ArchitectureLoader] = Registry("architecture")


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
    return sorted(ARCHITECTURES.names())


def _parse_document(text: str, source: str) -> tuple[ClipConfig, FamilyDefaults]:
    """An architecture file's config and its family defaults."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: not valid JSON: {err}") from err
    try:
        return _split_document(data)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{source}: invalid architecture: {err}") from err


def _split_document(data: Any) -> tuple[ClipConfig, FamilyDefaults]:
    data = dict(data) if isinstance(data, dict) else data
    preprocess = data.pop(PREPROCESS_KEY, {}) if isinstance(data, dict) else {}
    tokenizer = data.pop(TOKENIZER_KEY, None) if isinstance(data, dict) else None
    config = ClipConfig.from_dict(data)
    defaults = FamilyDefaults(_checked_preprocess(preprocess, config), check_tokenizer(tokenizer))
    return config, defaults


def check_tokenizer(section: Any, where: str = TOKENIZER_KEY) -> dict[str, str] | None:
    """A ``tokenizer`` section (``None``: CLIP's BPE), validated; ``where`` names it."""
    if section is None:
        return None
    if (
        not isinstance(section, dict)
        or not {"kind", "hub_id"} <= set(section) <= {"kind", "hub_id", "clean", "strip_sep_token"}
        or section["kind"] not in TOKENIZER_KINDS
        or not isinstance(section["hub_id"], str)
        or not section["hub_id"]
        or section.get("clean", "none") not in CLEAN_MODES
        or section.get("strip_sep_token", False) not in (True, False)
    ):
        raise ConfigError(
            f"'{where}' must be {{'kind': one of {list(TOKENIZER_KINDS)}, 'hub_id': "
            f"'owner/repo'[, 'clean': one of {list(CLEAN_MODES)}][, 'strip_sep_token': bool]}}, "
            f"got {section!r:.120}"
        )
    return dict(section)


def tokenizer_clean(section: dict[str, str]) -> str:
    """The text cleaning a (checked) ``tokenizer`` section asks for."""
    return section.get("clean", TOKENIZER_CLEAN[section["kind"]])


def _checked_preprocess(section: Any, config: ClipConfig) -> dict[str, Any]:
    """The ``preprocess`` section, validated as a preprocessing config of the image size."""
    if not isinstance(section, dict):
        raise ConfigError(f"'{PREPROCESS_KEY}' must be a mapping, got {type(section).__name__}")
    if "image_size" in section or "size" in section:
        raise ConfigError(f"'{PREPROCESS_KEY}' takes its image size from vision.image_size")
    PreprocessConfig.from_dict({"image_size": config.vision.image_size, **section})
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def read_architecture_file(path: str | Path) -> ClipConfig:
    """The validated architecture in a JSON file (same schema as the built-in ones)."""
    return _read_document(path)[0]


def _read_document(path: str | Path) -> tuple[ClipConfig, FamilyDefaults]:
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
    source: str | Path | ClipConfig | dict[str, Any],
    name: str | None = None,
    *,
    replace: bool = False,
) -> str:
    """Make an architecture available by name; returns the name.

    ``source`` is a JSON file (named after its stem unless ``name`` is given), a config
    dict or a :class:`ClipConfig`; a file or dict may hold ``preprocess`` and
    ``tokenizer`` sections. A registered name is refused unless ``replace=True``;
    built-in names cannot be shadowed.
    """
    defaults = FamilyDefaults()
    if isinstance(source, ClipConfig):
        config = source
    elif isinstance(source, dict):
        config, defaults = _split_document(source)
    else:
        config, defaults = _read_document(source)
        name = name or Path(source).stem
    if not name:
        raise ConfigError("register_architecture needs a name for a dict or ClipConfig source")
    if name in _architecture_files():
        raise ConfigError(f"architecture {name!r} is built in; register it under another name")
    document = (config, defaults)
    ARCHITECTURES.register(name, lambda: document, replace=replace)
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
    return _document(name)[0]


def _document(name: str | Path) -> tuple[ClipConfig, FamilyDefaults]:
    if is_architecture_file(name):
        return _read_document(name)
    resolved = resolve_architecture_name(str(name))
    if resolved is None:
        raise unknown_architecture(str(name))
    return ARCHITECTURES.get(resolved)()


def get_preprocess(name: str | Path) -> dict[str, Any]:
    """The image preprocessing an architecture declares for its family: a
    :class:`~clipforge.preprocess.PreprocessConfig` dict with its ``image_size``."""
    config, defaults = _document(name)
    return {"image_size": config.vision.image_size, **defaults.preprocess}


def get_tokenizer_source(name: str | Path) -> dict[str, str] | None:
    """Where an architecture's family tokenizer lives (``{"kind", "hub_id"}``), or ``None``
    for CLIP's BPE, which ships with clipforge."""
    return _document(name)[1].tokenizer


@cache
def _builtin(name: str) -> tuple[ClipConfig, FamilyDefaults]:
    return _parse_document(_architecture_files()[name], f"built-in architecture {name!r}")


for _name in _architecture_files():
    ARCHITECTURES.register(_name, partial(_builtin, _name))
