"""The search-backend seam: a backend-neutral vector-store protocol and its registry.

A backend stores ``(id, vector)`` pairs of L2-normalised float32 vectors and answers
inner-product (cosine) top-k queries, optionally restricted to an allowed set of ids (the
metadata filters, pre-selected in SQL, travel as that set). The SQLite metadata store keeps
every vector too, so a backend can always be rebuilt or reconciled from it.

Adding a backend is adding one module whose factory is registered in :data:`BACKENDS`
(:func:`register_backend`, or a lazy ``"module:attr"`` entry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError
from ..registry import Registry


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

    def tune(
        self, queries: np.ndarray, truth: np.ndarray, k: int, query_ids: np.ndarray | None = None
    ) -> dict:
        """Pick search parameters meeting the target recall@k against exact ``truth`` ids."""
        ...

    def save(self, version: int) -> None:
        """Persist atomically, recording the metadata ``version`` it reflects."""
        ...


BackendFactory = Callable[[Path, int, StoreOptions], VectorStore]
"""``factory(directory, dim, options)`` → an opened (possibly empty) store."""

#: backend name -> its factory; the built-in ones are imported on first use (their
#: libraries are optional extras)
BACKENDS: Registry[BackendFactory] = Registry("search backend")
BACKENDS.register_lazy("faiss", "clipforge.index.faiss_store:open_faiss")
BACKENDS.register_lazy("milvus", "clipforge.index.milvus_store:open_milvus")
_EXTRAS = {"faiss": "search", "milvus": "milvus"}


def register_backend(
    name: str, *, replace: bool = False
) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator registering a backend factory under ``name``."""
    return BACKENDS.register(name, replace=replace)


def list_backends() -> list[str]:
    """Names of the registered backends."""
    return BACKENDS.names()


def open_backend(name: str, directory: Path, dim: int, options: StoreOptions) -> VectorStore:
    """Open the backend called ``name`` in ``directory``."""
    try:
        factory = BACKENDS.get(name)
    except ImportError as err:
        extra = _EXTRAS.get(name, name)
        raise ConfigError(
            f"search backend {name!r} needs {err.name or 'its library'}: "
            f"pip install 'clipforge[{extra}]'"
        ) from err
    return factory(directory, dim, options)
