"""Semantic image search: an incremental, crash-safe index over CLIP embeddings.

``Index`` keeps metadata and vectors in SQLite and searches through a pluggable
:class:`VectorStore` backend (FAISS embedded by default; see :func:`register_backend`).
"""

from .index import Index, IndexReport
from .locking import (
    IndexCorruptError,
    IndexLockedError,
    IndexNotFoundError,
    IndexWriteError,
    RootNotFoundError,
)
from .opening import ModelMismatchError, PrecisionMismatchError, require_index
from .query import Filters, SearchHit
from .reconcile import IndexRepairedWarning
from .store import StoreOptions, VectorStore, list_backends, open_backend, register_backend

__all__ = [
    "Filters",
    "Index",
    "IndexCorruptError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexRepairedWarning",
    "IndexReport",
    "IndexWriteError",
    "RootNotFoundError",
    "ModelMismatchError",
    "PrecisionMismatchError",
    "SearchHit",
    "StoreOptions",
    "VectorStore",
    "list_backends",
    "open_backend",
    "register_backend",
    "require_index",
]
