"""Keeping the vector file in line with SQLite, the source of truth.

The comparison is by content (the set of ids), not by the recorded version and count: a
file written by a concurrent process, a damaged file or a missing one is rebuilt from the
vectors stored in SQLite, and the repair is announced with a warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .store import StoreOptions, VectorStore, open_backend


class IndexRepairedWarning(UserWarning):
    """The vector file disagreed with SQLite and was rebuilt from it."""


def open_store(name: str, directory: Path, dim: int, options: StoreOptions) -> VectorStore:
    """Open the backend; a damaged vector file is set aside (``*.damaged``) and rebuilt."""
    try:
        return open_backend(name, directory, dim, options)
    except Exception as exc:  # noqa: BLE001 - any load failure: SQLite holds every vector
        if name != "faiss":
            raise
        bad = Path(directory) / "vectors.faiss"
        if bad.exists():
            os.replace(bad, bad.with_suffix(".faiss.damaged"))
        warnings.warn(
            f"{bad} is damaged ({type(exc).__name__}: {exc}); rebuilding it from metadata.sqlite",
            IndexRepairedWarning,
            stacklevel=2,
        )
        return open_backend(name, directory, dim, options)


def differs(store: VectorStore, db_ids: np.ndarray) -> bool:
    """Whether the backend's ids are not exactly the stored ids."""
    backend_ids = np.sort(store.ids())
    return len(backend_ids) != len(db_ids) or not np.array_equal(backend_ids, np.sort(db_ids))


def repair(index, *, announce: bool = True) -> bool:
    """Bring the backend in line with SQLite by content; returns whether anything changed."""
    store, meta = index.store, index.meta
    db_ids = meta.all_ids()
    if store.version >= 0 and not differs(store, db_ids):
        return False
    if store.version < 0:
        if len(db_ids) and announce:
            _warn(index.path, "missing", len(db_ids))
        index.rebuild(_locked=True)
        return True
    backend_ids = store.ids()
    extra, missing = np.setdiff1d(backend_ids, db_ids), np.setdiff1d(db_ids, backend_ids)
    if announce:
        _warn(index.path, f"{len(extra)} stale and {len(missing)} missing vectors", len(db_ids))
    store.remove(extra)
    ids, vectors = meta.vectors(missing, index._dim)
    store.add(ids, vectors)
    return True


def _warn(path: Path, what: str, n: int) -> None:
    warnings.warn(
        f"index {path}: vector file out of line with metadata.sqlite ({what}); "
        f"rebuilt from the {n} stored vectors",
        IndexRepairedWarning,
        stacklevel=3,
    )
