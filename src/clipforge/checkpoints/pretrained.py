"""Registry of named pretrained weights (``pretrained.json``) and their download.

Downloads go through ``huggingface_hub`` (cached; ``HF_HUB_OFFLINE=1`` uses the cache only).
Every entry is an open_clip-layout hub repository. An entry records only what differs from
its architecture: ``activation`` (QuickGELU releases), ``preprocess`` (fields over the
architecture's ``preprocess`` section) and ``tokenizer`` (``{"kind": "sentencepiece",
"hub_id": ...}``, over the architecture's: where the release's ``tokenizer.json`` lives).
A family tokenizer is fetched like weights: :func:`download_tokenizer`, or lazily on first
use by a model created by name (:class:`HubTokenizer`).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..configs.registry import check_tokenizer, get_tokenizer_source, tokenizer_clean
from ..errors import ConfigError
from ..registry import Registry
from ..tokenizer.files import tokenizer_from_dir
from ..tokenizer.sentencepiece import SentencePieceTokenizer
from .errors import CheckpointError
from .formats import open_clip


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a named checkpoint lives and how it must be used."""

    architecture: str
    tag: str
    hub_id: str
    activation: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, str] | None = None

    def __post_init__(self) -> None:
        where = f"pretrained {self.architecture}/{self.tag} tokenizer"
        object.__setattr__(self, "tokenizer", check_tokenizer(self.tokenizer, where))


#: a SentencePiece tokenizer's files in its hub repository (the first one is required)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
#: an HF text tower's tokenizer (kind "hf"): the first of these is required (mT5's hub
#: repositories ship only ``spiece.model``); ``config.json`` names the class where
#: ``tokenizer_config.json`` does not
HF_TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model")
HF_TOKENIZER_EXTRA = ("config.json",)


class UnknownPretrainedError(CheckpointError, ConfigError):
    """An architecture/tag pair with no registered pretrained weights."""

    exit_code = ConfigError.exit_code


#: ``"architecture/tag"`` -> the entry's fields (``hub_id``, and what differs from the
#: architecture: ``activation``, ``preprocess``, ``tokenizer``)
PRETRAINED: Registry[dict[str, Any]] = Registry("pretrained weights", error=UnknownPretrainedError)


def register_pretrained(
    architecture: str, tag: str, hub_id: str, *, replace: bool = False, **fields: Any
) -> PretrainedWeights:
    """Add a named release (an open_clip-layout hub repository); returns the checked entry."""
    entry = PretrainedWeights(architecture=architecture, tag=tag, hub_id=hub_id, **fields)
    PRETRAINED.register(f"{architecture}/{tag}", {"hub_id": hub_id, **fields}, replace=replace)
    return entry


def _load_builtin() -> None:
    text = resources.files("clipforge.checkpoints").joinpath("pretrained.json").read_text("utf-8")
    for architecture, tags in json.loads(text).items():
        for tag, fields in tags.items():
            PRETRAINED.register(f"{architecture}/{tag}", fields)


def list_pretrained(architecture: str | None = None) -> list[tuple[str, str]]:
    """(architecture, tag) pairs of the registry, optionally for one architecture."""
    pairs = sorted(tuple(key.rsplit("/", 1)) for key in PRETRAINED.names())
    return [(arch, tag) for arch, tag in pairs if architecture in (None, arch)]


def get_pretrained(architecture: str, tag: str) -> PretrainedWeights:
    """The registry entry for ``architecture`` + ``tag``, with a helpful error if unknown;
    its ``tokenizer`` is the architecture's where the entry names none."""
    tags = [t for _, t in list_pretrained(architecture)]
    if not tags:
        raise UnknownPretrainedError(f"no pretrained weights registered for {architecture!r}")
    if tag not in tags:
        raise UnknownPretrainedError(
            f"unknown pretrained tag {tag!r} for {architecture}; available: {', '.join(tags)}"
        )
    fields = {
        "tokenizer": get_tokenizer_source(architecture),
        **PRETRAINED.get(f"{architecture}/{tag}"),
    }
    return PretrainedWeights(architecture=architecture, tag=tag, **fields)


_load_builtin()


def _offline_reason(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached right now (``None``: it can), decided in seconds."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as err:
        return f"cannot connect to {endpoint}: {err}"
    return None


def _how_to_get(hub_id: str) -> str:
    return (
        f"Pre-download it where there is network: `hf download {hub_id} --local-dir DIR` "
        f"(older: `huggingface-cli download {hub_id} --local-dir DIR`), then load the "
        "directory: --model DIR on the command line, clipforge.load('DIR') in Python. "
        "(A populated Hugging Face cache also works, with HF_HUB_OFFLINE=1.)"
    )


def download_weights(entry: PretrainedWeights, cache_dir: str | Path | None = None) -> Path:
    """Local path of the entry's weights file, downloaded on first use (safetensors first).

    A cached copy is used without touching the network. Offline (``HF_HUB_OFFLINE`` set or
    the endpoint unreachable within seconds) this fails at once, saying how to pre-download.
    """
    label = f"{entry.architecture}/{entry.tag}"
    return _fetch(label, *weights_location(entry.hub_id), cache_dir, "weights")


def weights_location(hub_id: str) -> tuple[str, tuple[str, ...]]:
    """The repository of a weights entry and the files to try, in order: open_clip's
    names, or the file an ``org/repo/file`` id names (ViTamin's ``pytorch_model.bin``),
    after its ``.safetensors`` twin, as open_clip's ``hf_hub`` entries read."""
    parts = hub_id.split("/", 2)
    repo = "/".join(parts[:2])
    if len(parts) < 3 or not parts[2]:
        return repo, open_clip.WEIGHTS_FILES
    filename = parts[2]
    stem, dot, suffix = filename.rpartition(".")
    if dot and suffix in ("bin", "pth"):
        return repo, (f"{stem}.safetensors", filename)
    return repo, (filename,)


def download_tokenizer(
    entry: PretrainedWeights, cache_dir: str | Path | None = None
) -> Path | None:
    """The local directory of the entry's own tokenizer files (``None``: CLIP's BPE, which
    ships with clipforge); downloaded on first use like :func:`download_weights`."""
    if entry.tokenizer is None:
        return None
    label = f"{entry.architecture}/{entry.tag}"
    return _tokenizer_dir(label, entry.tokenizer["hub_id"], cache_dir, entry.tokenizer["kind"])


def _tokenizer_dir(
    label: str, hub_id: str, cache_dir: str | Path | None, kind: str = "sentencepiece"
) -> Path:
    required = HF_TOKENIZER_FILES if kind == "hf" else TOKENIZER_FILES[:1]
    path = _fetch(label, hub_id, required, cache_dir, "tokenizer")
    optional = TOKENIZER_FILES[1:]  # the pad token's name, where the repo has them
    optional += HF_TOKENIZER_EXTRA if kind == "hf" else ()
    missing = [name for name in optional if not _try_file(hub_id, name, cache_dir, True)]
    if missing and _offline_reason() is None:
        for name in missing:
            _try_file(hub_id, name, cache_dir, False)
    return path.parent


class HubTokenizer:
    """A family's SentencePiece tokenizer, fetched from its hub repository on first use (the
    cache first; offline, a clear error saying how to pre-download). Called as
    :class:`~clipforge.tokenizer.sentencepiece.SentencePieceTokenizer` is."""

    def __init__(
        self, label: str, source: dict[str, str], context_length: int,
        cache_dir: str | Path | None = None,
    ) -> None:  # fmt: skip
        checked = check_tokenizer(source) or {}
        self.label, self.hub_id, self.kind = label, checked["hub_id"], checked["kind"]
        self.clean = tokenizer_clean(checked)
        self.strip_sep_token = bool(checked.get("strip_sep_token", False))
        self.context_length, self.cache_dir = context_length, cache_dir
        self._tokenizer: Any = None

    def __call__(self, texts: Any, context_length: int | None = None, truncate: bool = True) -> Any:
        return self.resolved()(texts, context_length=context_length, truncate=truncate)

    def resolved(self) -> Any:
        """The :class:`~clipforge.tokenizer.sentencepiece.SentencePieceTokenizer` itself
        (fetched now if it was not yet)."""
        if self._tokenizer is None:
            directory = _tokenizer_dir(self.label, self.hub_id, self.cache_dir, self.kind)
            source: dict[str, Any] = {"kind": self.kind, "clean": self.clean}
            if self.strip_sep_token:
                source["strip_sep_token"] = True
            self._tokenizer = release_tokenizer(directory, self.context_length, source)
        return self._tokenizer


def release_tokenizer(directory: Path, context_length: int, source: dict[str, Any] | None) -> Any:
    """The tokenizer in a release's downloaded ``directory``, read as its ``tokenizer``
    section says: an ``hf`` tokenizer the release cleans by canonicalising (MetaCLIP 2's mT5)
    as SigLIP's are read; otherwise by kind (:func:`~clipforge.tokenizer.files.tokenizer_from_dir`)."""
    kind = (source or {}).get("kind")
    if kind == "hf" and source is not None and tokenizer_clean(source) == "canonicalize":
        return SentencePieceTokenizer.from_dir(directory, context_length, "canonicalize")
    strip = bool((source or {}).get("strip_sep_token", False))
    return tokenizer_from_dir(directory, context_length, kind, strip_sep_token=strip)


def _try_file(hub_id: str, filename: str, cache_dir: str | Path | None, local: bool) -> bool:
    """Fetch an optional file into the cache; whether it is there now."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        hf_hub_download(hub_id, filename, cache_dir=cache_dir, local_files_only=local)
    except (EntryNotFoundError, LocalEntryNotFoundError, OSError):
        return False
    return True


def _fetch(
    label: str,
    hub_id: str,
    filenames: tuple[str, ...],
    cache_dir: str | Path | None,
    what: str,
) -> Path:
    """The first of ``filenames`` in ``hub_id``: from the cache, else from the hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    for filename in filenames:
        try:
            return Path(
                hf_hub_download(hub_id, filename, cache_dir=cache_dir, local_files_only=True)
            )
        except (EntryNotFoundError, LocalEntryNotFoundError, OSError):
            continue
    offline = _offline_reason()
    if offline is not None:
        raise CheckpointError(
            f"pretrained {what} of {label} ({hub_id}): not in the local cache, and the "
            f"hub is unreachable ({offline}). {_how_to_get(hub_id)}"
        )
    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(hub_id, filename, cache_dir=cache_dir))
        except (EntryNotFoundError, LocalEntryNotFoundError) as err:
            errors.append(f"{filename}: {type(err).__name__}")
        except OSError as err:  # network failure without a cached copy
            errors.append(f"{filename}: {err}")
    raise CheckpointError(
        f"could not get {what} for {label} from the hub repo "
        f"{hub_id} ({'; '.join(errors)}). {_how_to_get(hub_id)}"
    )
