"""Opening an index directory: is there an index, which model built it, file kinds."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ..errors import UsageError
from ..models.protocols import ClipModel
from ..quantization import is_quantized
from ..runtime import Precision, check_precision, resolve_precision
from .locking import IndexNotFoundError
from .metadata import MetadataStore
from .scan import model_fingerprint

__all__ = [
    "ModelMismatchError",
    "PrecisionMismatchError",
    "check_precision_of",
    "file_kind",
    "require_index",
]


class ModelMismatchError(UsageError):
    """The index was built with another model (or other weights / preprocessing)."""


class PrecisionMismatchError(ModelMismatchError):
    """The index was built at another precision (e.g. int8 vectors queried with fp32)."""

    http_status = 409


def check_precision_of(
    meta: MetadataStore, model: ClipModel | None, precision: str | None, allow_mismatch: bool
) -> Precision:
    """The precision the index runs at: the recorded one (``fp32`` for indexes older than
    the record), or ``precision`` for a new index; a different one is refused unless
    ``allow_mismatch``."""
    recorded = meta.get_meta("precision")
    if model is not None and is_quantized(model):
        raise UsageError(
            "Index.open takes the fp32 model and precision='int8' (not an int8 copy), so the "
            "index can check which model built it"
        )
    device = next(model.parameters()).device if model is not None else "cpu"
    wanted = resolve_precision(precision, device) if precision is not None else None
    if recorded is None:
        if meta.get_meta("model_id") is not None:  # an index from before precisions
            recorded = "fp32"
        else:
            chosen = wanted or "fp32"
            if model is not None:
                with meta.transaction():
                    meta.set_meta("precision", chosen)
            return chosen
    if wanted is not None and wanted != recorded and not allow_mismatch:
        raise PrecisionMismatchError(
            f"index {meta.path.parent} was built at precision {recorded}; querying it at "
            f"{wanted} mixes embeddings of different precisions (pass --precision {recorded}, "
            "or --allow-precision-mismatch)"
        )
    return wanted or check_precision(recorded)


def require_index(path: str | os.PathLike) -> Path:
    """``path`` if it holds an index, else :class:`IndexNotFoundError` (creates nothing)."""
    path = Path(path)
    if not (path / "metadata.sqlite").is_file():
        raise IndexNotFoundError(
            f"no index at {path} (create one with `clipforge index ... --db {path}`)"
        )
    return path


def file_kind(mode: int) -> str:
    """A readable name of a non-regular file's kind."""
    for test, name in (
        (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"),
    ):  # fmt: skip
        if test(mode):
            return name
    return "special file"


def _check_model(
    meta: MetadataStore, model: ClipModel | None, backend: str, spec: dict | None
) -> int:
    """Record the first model's id; refuse another. Returns the embedding dimension."""
    recorded = meta.get_meta("model_id")
    if model is None:
        if recorded is None:
            raise ValueError(f"{meta.path.parent} is not an index yet: pass the model to build it")
        return int(meta.get_meta("dim") or 0)
    fingerprint = model_fingerprint(model)
    if recorded is not None and recorded != fingerprint:
        built = meta.get_meta("model_spec") or "unknown"
        raise ModelMismatchError(
            f"index {meta.path.parent} was built with model id {recorded} ({built}); the given "
            f"model has id {fingerprint}: embeddings of different models cannot be compared. "
            "Use the same model, or index into a new --db directory."
        )
    if recorded is None:
        with meta.transaction():
            meta.set_meta("model_id", fingerprint)
            meta.set_meta("dim", str(model.config.embed_dim))
            meta.set_meta("backend", backend)
            meta.set_meta("model_spec", json.dumps(spec or {}))
    return model.config.embed_dim
