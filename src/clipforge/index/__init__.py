"""Semantic image search: an incremental, crash-safe index over CLIP embeddings.

``Index`` keeps metadata and vectors in SQLite and searches through a pluggable
:class:`VectorStore` backend (FAISS embedded by default; see :func:`register_backend`).
"""

from .index import Index, IndexReport, ModelMismatchError
from .query import Filters, SearchHit
from .store import StoreOptions, VectorStore, list_backends, open_backend, register_backend

__all__ = [
    "Filters",
    "Index",
    "IndexReport",
    "ModelMismatchError",
    "SearchHit",
    "StoreOptions",
    "VectorStore",
    "list_backends",
    "open_backend",
    "register_backend",
]
