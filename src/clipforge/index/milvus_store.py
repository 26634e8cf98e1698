"""A Milvus backend (``backend="milvus"``): the vectors in a Milvus collection.

By default the collection lives in ``DIR/vectors.milvus.db`` through milvus-lite, which runs
Milvus's client API in-process (``pip install 'clipforge[milvus]'``). To use a Milvus
server or cluster instead, set ``CLIPFORGE_MILVUS_URI`` (e.g. ``http://milvus:19530``,
plus ``CLIPFORGE_MILVUS_TOKEN`` when it needs one) before opening the index; the collection
is named after the index directory, so several indexes can share one cluster. The
SQLite metadata store stays in ``DIR`` either way, and a lost or stale collection is
rebuilt from it like a stale FAISS file.

Search is exact inner product (a ``FLAT`` index; on a cluster, change ``INDEX`` to
``HNSW``/``IVF_FLAT`` for approximate search), filters travel as ``id in [...]``
expressions, and every call runs at ``Strong`` consistency so a search sees every add and
delete before it. ``save`` records the metadata version in ``DIR/vectors.milvus.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..atomic import write_text_atomic
from ..errors import InputError
from .store import StoreOptions

logger = logging.getLogger("clipforge.index")
F = TypeVar("F", bound=Callable[..., Any])

LITE_FILE = "vectors.milvus.db"
VERSION_FILE = "vectors.milvus.json"
INDEX = {"index_type": "FLAT", "metric_type": "IP"}
_CONSISTENCY = "Strong"
_BATCH = 10_000
_CONNECT_TIMEOUT = 10.0  # seconds to reach a Milvus server


class MilvusStoreError(InputError):
    """Milvus cannot be reached, or its database/collection cannot be opened."""

    http_status = 503


def _describe(directory: Path) -> str:
    uri = os.environ.get("CLIPFORGE_MILVUS_URI")
    if uri:
        return f"Milvus at {uri}"
    return f"milvus-lite database {os.fspath(directory / LITE_FILE)!r}"


@contextmanager
def milvus_errors(directory: Path, doing: str) -> Iterator[None]:
    """Turn pymilvus/OS failures into one :class:`MilvusStoreError` line naming the
    database (and, for milvus-lite, how to rebuild it from ``metadata.sqlite``)."""
    from pymilvus.exceptions import MilvusException

    # both log each failure with a traceback themselves: the error below says it in one line
    quiet = [logging.getLogger(name) for name in ("pymilvus", "milvus_lite")]
    levels = [q.level for q in quiet]
    for logger_ in quiet:
        logger_.setLevel(logging.CRITICAL)
    try:
        yield
    except (MilvusException, OSError) as err:
        reason = getattr(err, "message", None) or str(err) or type(err).__name__
        hint = "" if os.environ.get("CLIPFORGE_MILVUS_URI") else (
            f"; move {LITE_FILE} away to rebuild it from metadata.sqlite"
        )  # fmt: skip
        raise MilvusStoreError(f"{_describe(directory)}: cannot {doing}: {reason}{hint}") from None
    finally:
        for logger_, level in zip(quiet, levels, strict=True):
            logger_.setLevel(level)


def _guarded(doing: str) -> Callable[[F], F]:
    """Method decorator: :func:`milvus_errors` around a :class:`MilvusStore` call."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def call(self: MilvusStore, *args: Any, **kwargs: Any) -> Any:
            with milvus_errors(self.directory, doing):
                return method(self, *args, **kwargs)

        return call  # type: ignore[return-value]

    return decorate


def _client_and_collection(directory: Path):
    from pymilvus import MilvusClient

    uri = os.environ.get("CLIPFORGE_MILVUS_URI")
    if not uri:
        lite = directory / LITE_FILE
        if lite.exists() and not lite.is_dir():
            raise OSError(f"{LITE_FILE} is not a milvus-lite database directory")
        return MilvusClient(str(lite)), "clipforge"
    token = os.environ.get("CLIPFORGE_MILVUS_TOKEN", "")
    digest = hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:16]
    return MilvusClient(uri=uri, token=token, timeout=_CONNECT_TIMEOUT), f"clipforge_{digest}"


def _recorded_version(path: Path) -> int:
    """The version in ``vectors.milvus.json``; -1 (rebuild from SQLite) if it is missing
    or damaged."""
    if not path.is_file():
        return -1
    try:
        return int(json.loads(path.read_text("utf-8"))["version"])
    except (ValueError, KeyError, TypeError, OSError) as err:
        logger.warning("%s is damaged (%s): rebuilding the collection from SQLite", path, err)
        return -1


class MilvusStore:
    """A :class:`~clipforge.index.store.VectorStore` backed by a Milvus collection."""

    def __init__(self, directory: Path, dim: int, options: StoreOptions) -> None:
        self.directory = Path(directory)
        self.dim, self.options = dim, options
        self._version = _recorded_version(self.directory / VERSION_FILE)
        with milvus_errors(self.directory, "open the collection"):
            self.client, self.collection = _client_and_collection(self.directory)
            if not self.client.has_collection(self.collection):
                self._create()
                self._version = -1  # whatever was recorded, the collection is new
            else:  # built by another process (or before a crash): released until loaded
                self.client.load_collection(self.collection)

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", **INDEX)
        self.client.create_collection(self.collection, schema=schema,
                                      consistency_level=_CONSISTENCY)  # fmt: skip
        # sync=False: pymilvus's own wait sleeps 0.5 s before its first look, for an index
        # over an empty collection; loading waits until the collection can be searched.
        self.client.create_index(self.collection, params, sync=False)
        self.client.load_collection(self.collection)

    # -- mutation -------------------------------------------------------------------
    @_guarded("count the vectors")
    def __len__(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"],
                                 consistency_level=_CONSISTENCY)  # fmt: skip
        return int(rows[0]["count(*)"])

    @property
    def version(self) -> int:
        return self._version

    def describe(self) -> dict:
        return {"backend": "milvus", "kind": INDEX["index_type"].lower(),
                "collection": self.collection}  # fmt: skip

    @_guarded("add vectors")
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32)
        for start in range(0, len(ids), _BATCH):
            rows = [{"id": int(i), "vector": v.tolist()}
                    for i, v in zip(ids[start:start + _BATCH], vectors[start:start + _BATCH],
                                    strict=True)]  # fmt: skip
            self.client.insert(self.collection, rows)

    @_guarded("remove vectors")
    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        for start in range(0, len(ids), _BATCH):
            self.client.delete(self.collection, ids=ids[start : start + _BATCH].tolist())

    @_guarded("list the ids")
    def ids(self) -> np.ndarray:
        iterator = self.client.query_iterator(self.collection, batch_size=_BATCH, filter="",
                                              output_fields=["id"])  # fmt: skip
        found: list[int] = []
        try:
            while batch := iterator.next():
                found.extend(int(row["id"]) for row in batch)
        finally:
            iterator.close()
        return np.asarray(found, dtype=np.int64)

    # -- search ---------------------------------------------------------------------
    @_guarded("search")
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = max(1, int(k))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        if allowed is not None and len(allowed) == 0 or len(queries) == 0:
            return scores, ids
        expr = "" if allowed is None else f"id in {np.asarray(allowed, np.int64).tolist()}"
        results = self.client.search(self.collection, data=queries.tolist(), limit=k,
                                     filter=expr, output_fields=["id"],
                                     search_params={"metric_type": "IP"},
                                     consistency_level=_CONSISTENCY)  # fmt: skip
        for row, hits in enumerate(results):
            for col, hit in enumerate(hits):
                scores[row, col], ids[row, col] = hit["distance"], hit["id"]
        return scores, ids

    @_guarded("rebuild the collection")
    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.client.drop_collection(self.collection)
        self._create()
        self.add(ids, vectors)

    def wants_rebuild(self) -> bool:
        return False  # FLAT: nothing to retrain; Milvus compacts deletions itself

    def tune(self, queries: np.ndarray, truth: np.ndarray, k: int, query_ids=None) -> dict:
        return {"recall": 1.0}  # exact search

    # -- persistence ----------------------------------------------------------------
    @_guarded("save the collection")
    def save(self, version: int) -> None:
        self.client.flush(self.collection)
        path = self.directory / VERSION_FILE
        write_text_atomic(path, json.dumps({"version": version, "collection": self.collection}))
        self._version = version


def open_milvus(directory: Path, dim: int, options: StoreOptions) -> MilvusStore:
    """Factory of the ``milvus`` backend."""
    return MilvusStore(directory, dim, options)
