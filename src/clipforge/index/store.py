"""The search-backend seam: a backend-neutral vector-store protocol and its registry.

A backend stores ``(id, vector)`` pairs of L2-normalised float32 vectors and answers
inner-product (cosine) top-k queries, optionally restricted to an allowed set of ids (the
metadata filters, pre-selected in SQL, travel as that set). The SQLite metadata store keeps
every vector too, so a backend can always be rebuilt or reconciled from it.

Adding a backend is adding one module that calls :func:`register_backend`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class StoreOptions:
    """How a backend builds its index.

    Attributes:
        kind: ``"auto"`` (chosen from the collection size and ``max_memory``) or a
            backend-specific index kind (FAISS: ``"flat"``, ``"ivf"``, ``"ivfpq"``, ``"hnsw"``).
        max_memory: memory budget in bytes for the index (``None``: unlimited).
        target_recall: recall@10 that approximate search parameters are tuned to reach.
    """

    kind: str = "auto"
    max_memory: int | None = None
    target_recall: float = 0.95


@runtime_checkable
class VectorStore(Protocol):
    """What the index needs from a search backend."""

    dim: int

    def __len__(self) -> int: ...

    @property
    def version(self) -> int:
        """The metadata version the persisted state reflects (-1: nothing persisted)."""
        ...

    def describe(self) -> dict:
        """Index kind and search parameters, for reports."""
        ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under int64 ids (ids never already present)."""
        ...

    def remove(self, ids: np.ndarray) -> None:
        """Delete ids (unknown ids are ignored)."""
        ...

    def ids(self) -> np.ndarray:
        """Every live id (used to reconcile a stale backend with the metadata store)."""
        ...

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ``(scores, ids)``, each ``(nq, k)``; missing results have id -1.

        ``allowed``: only these ids may be returned (filters applied inside the search).
        """
        ...

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the whole content (choosing/training the index kind for this size)."""
        ...

    def wants_rebuild(self) -> bool:
        """Whether the index kind no longer suits the collection (size tier, deletions)."""
        ...

    def tune(self, queries: np.ndarray, truth: np.ndarray, k: int) -> dict:
        """Pick search parameters meeting the target recall@k against exact ``truth`` ids."""
        ...

    def save(self, version: int) -> None:
        """Persist atomically, recording the metadata ``version`` it reflects."""
        ...


BackendFactory = Callable[[Path, int, StoreOptions], VectorStore]
"""``factory(directory, dim, options)`` → an opened (possibly empty) store."""

_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator registering a backend factory under ``name``."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        _BACKENDS[name] = factory
        return factory

    return decorate


def list_backends() -> list[str]:
    """Names of the registered backends."""
    _load_builtin()
    return sorted(_BACKENDS)


def open_backend(name: str, directory: Path, dim: int, options: StoreOptions) -> VectorStore:
    """Open the backend called ``name`` in ``directory``."""
    _load_builtin()
    try:
        factory = _BACKENDS[name]
    except KeyError:
        hint = " (pip install 'clipforge[milvus]')" if name == "milvus" else ""
        raise ValueError(
            f"unknown search backend {name!r}{hint}; known: {list_backends()}"
        ) from None
    return factory(directory, dim, options)


def _load_builtin() -> None:
    from . import faiss_store  # noqa: F401  (registers "faiss")

    if "milvus" not in _BACKENDS:
        with contextlib.suppress(ImportError):  # the milvus extra is optional
            from . import milvus_store  # noqa: F401  (registers "milvus")
