"""The embedded default backend: a FAISS index over inner product, persisted atomically.

Index kinds (``StoreOptions.kind``): ``flat`` (exact, ``IndexIDMap2`` over ``IndexFlatIP``),
``ivf`` (``IndexIVFFlat``), ``ivfpq`` (``IndexIVFPQ``) and ``hnsw`` (``IndexHNSWFlat`` in an
``IndexIDMap2``; deletions are tombstones filtered inside the search until a rebuild).
``auto`` follows autofaiss-like rules: exact search while it is cheap, IVF-Flat when the
vectors fit the memory budget, IVF-PQ when they do not.

The file ``vectors.faiss`` holds a JSON header (kind, search parameters, the metadata
version it reflects), the serialised FAISS index and the HNSW tombstones; it is written to a
temporary file, fsynced and renamed, so a crash leaves either the old or the new file.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from .half_scan import HalfScan
from .store import StoreOptions

faiss: Any = importlib.import_module("faiss")  # SWIG stubs lack downcasts and params

FLAT_MAX = 20_000
"""Collections up to this size use exact search under ``kind="auto"`` (a few ms per query
on two busy cores). Exact search is memory-bandwidth bound: at 100,000 × 512 it reads
205 MB in float32, ~100 MB through the float16 scan (``half_scan.py``), ~8-20 ms there;
IVF-Flat answers in ~0.1 ms at recall@10 >= 0.95 (benchmarks/search.py)."""
MIN_POINTS_PER_CENTROID = 39
HNSW_M = 32
MAGIC = b"CLIPFORGE-FAISS/1\n"
FILE_NAME = "vectors.faiss"


def choose_kind(n: int, dim: int, max_memory: int | None) -> tuple[str, int]:
    """``(kind, nlist)`` for ``n`` vectors of ``dim`` floats under a memory budget in bytes."""
    flat_bytes = n * dim * 4
    fits = max_memory is None or flat_bytes * 1.05 <= max_memory
    flat_fits = max_memory is None or flat_bytes * 1.5 * 1.05 <= max_memory  # + float16 copy
    nlist = ivf_nlist(n)
    if n <= FLAT_MAX and flat_fits or nlist < 16:
        return "flat", 0
    return ("ivf" if fits else "ivfpq"), nlist


def ivf_nlist(n: int) -> int:
    """A power of two near ``4 * sqrt(n)``, with enough training points per centroid."""
    if n < 2 * MIN_POINTS_PER_CENTROID:
        return 1
    ideal = 2 ** round(math.log2(max(4 * math.sqrt(n), 1)))
    cap = 2 ** int(math.log2(n // MIN_POINTS_PER_CENTROID))
    return int(max(1, min(ideal, cap, 65536)))


def pq_m(dim: int, n: int, max_memory: int | None) -> int:
    """Sub-quantiser count for IVF-PQ: the largest that divides ``dim`` and fits the budget."""
    divisors = [m for m in (64, 48, 32, 16, 8, 4, 2, 1) if dim % m == 0]
    for m in divisors:
        if max_memory is None or n * (m + 8) * 1.1 <= max_memory:
            return m
    return divisors[-1]


class FaissStore:
    """A :class:`~clipforge.index.store.VectorStore` backed by FAISS (CPU)."""

    def __init__(self, directory: Path, dim: int, options: StoreOptions) -> None:
        self.directory = Path(directory)
        self.dim = dim
        self.options = options
        self.kind = "flat"
        self.nlist = 0
        self.params: dict[str, int] = {}
        self.tombstones: set[int] = set()
        self._version = -1
        self.index = self._new_index("flat", 0, 0)
        self.half: HalfScan | None = HalfScan(dim)  # flat only: float16 mirror for speed
        if (self.directory / FILE_NAME).exists():
            self._load()

    # -- construction ---------------------------------------------------------------
    def _new_index(self, kind: str, nlist: int, n: int) -> Any:
        ip = faiss.METRIC_INNER_PRODUCT
        if kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if kind == "hnsw":
            return faiss.IndexIDMap2(faiss.IndexHNSWFlat(self.dim, HNSW_M, ip))
        quantizer = faiss.IndexFlatIP(self.dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, ip)
        elif kind == "ivfpq":
            m = pq_m(self.dim, n, self.options.max_memory)
            index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, m, 8, ip)
        else:
            raise ValueError(f"unknown FAISS index kind {kind!r} (flat, ivf, ivfpq, hnsw, auto)")
        index.own_fields = True
        quantizer.this.disown()
        return index

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Choose the kind for this size (or the forced one), train, and add everything."""
        n = len(ids)
        kind, nlist = self._target(n)
        index = self._new_index(kind, nlist, n)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not index.is_trained:
            index.train(_training_sample(vectors, nlist))
        if kind == "hnsw":
            faiss.downcast_index(index.index).hnsw.efConstruction = 80
        self.index, self.kind, self.nlist = index, kind, nlist
        self.params = {"nprobe": min(16, nlist)} if kind.startswith("ivf") else {}
        if kind == "hnsw":
            self.params = {"efSearch": 64}
        self.tombstones = set()
        self.half = HalfScan(self.dim) if kind == "flat" else None
        if n:
            self.add(ids, vectors)

    def _target(self, n: int) -> tuple[str, int]:
        """The kind (and IVF list count) this store should have for ``n`` vectors."""
        kind, nlist = choose_kind(n, self.dim, self.options.max_memory)
        if self.options.kind != "auto":
            kind = self.options.kind
            nlist = ivf_nlist(n) if kind.startswith("ivf") else 0
        if kind.startswith("ivf") and nlist < 2:
            return "flat", 0  # too few vectors to train a coarse quantiser
        return kind, nlist

    def wants_rebuild(self) -> bool:
        """True when ``auto`` would now pick another kind or size, or tombstones pile up."""
        live = len(self)
        if self.tombstones and len(self.tombstones) > 0.25 * max(self.index.ntotal, 1):
            return True
        kind, nlist = self._target(live)
        if kind != self.kind:
            return True
        return kind != "flat" and not (nlist / 4 <= self.nlist <= nlist * 4)

    # -- mutation -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.index.ntotal) - len(self.tombstones)

    @property
    def version(self) -> int:
        return self._version

    def describe(self) -> dict:
        return {"backend": "faiss", "kind": self.kind, "nlist": self.nlist, **self.params}

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index.add_with_ids(vectors, ids)
        if self.half is not None:
            self.half.add(ids, vectors)

    def remove(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        if self.kind == "hnsw":  # HNSW graphs cannot delete: hide until the next rebuild
            known = set(self.ids().tolist())
            self.tombstones.update(i for i in ids.tolist() if i in known)
            return
        selector = faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))
        self.index.remove_ids(selector)
        if self.half is not None:
            self.half.remove(selector)

    def ids(self) -> np.ndarray:
        if self.kind in ("flat", "hnsw"):
            every = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            if not self.tombstones:
                return every
            return every[~np.isin(every, np.fromiter(self.tombstones, np.int64))]
        lists = self.index.invlists
        chunks = [np.zeros(0, np.int64)]
        for i in range(self.index.nlist):
            size = lists.list_size(i)
            if size:
                chunks.append(faiss.rev_swig_ptr(lists.get_ids(i), size).copy())
        return np.concatenate(chunks)

    # -- search ---------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, int(k))
        keep = []  # selectors must outlive the search call
        selector = None
        if allowed is not None:
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
            selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
            keep.append(allowed)
        if self.tombstones:
            dead = np.fromiter(self.tombstones, np.int64)
            batch = faiss.IDSelectorBatch(len(dead), faiss.swig_ptr(dead))
            keep += [dead, batch]
            not_dead = faiss.IDSelectorNot(batch)
            keep.append(not_dead)
            selector = not_dead if selector is None else faiss.IDSelectorAnd(selector, not_dead)
        keep.append(selector)
        # A filter keeping a fraction f of the vectors: visit ~1/f times more candidates.
        widen = 1.0 if allowed is None else max(self.index.ntotal, 1) / max(len(allowed), 1)
        params = self._search_params(selector, widen)
        with _one_thread(len(queries) == 1):
            if self.half is not None and self.half.usable(len(queries)):
                found = self.half.search(self.index, queries, k, params)
                if found is not None:  # exact (certified); None: scan in float32
                    return found
            scores, ids = self.index.search(queries, k, params=params)
            return self._fill_short_rows(queries, k, selector, widen, scores, ids)

    def _fill_short_rows(
        self, queries: np.ndarray, k: int, selector, widen: float, scores, ids
    ) -> tuple[np.ndarray, np.ndarray]:
        """An approximate index can return fewer than ``k`` hits when the lists it probed
        hold fewer vectors: search those queries again, probing 4x wider each time, until
        they fill or the whole index is probed (then fewer than ``k`` vectors qualify)."""
        if not (self.kind.startswith("ivf") or self.kind == "hnsw"):
            return scores, ids
        short = np.flatnonzero((ids < 0).any(axis=1))
        while len(short) and not self._probes_everything(widen):
            widen *= 4
            more = self.index.search(queries[short], k, params=self._search_params(selector, widen))
            scores[short], ids[short] = more
            short = short[(more[1] < 0).any(axis=1)]
        return scores, ids

    def _probes_everything(self, widen: float) -> bool:
        if self.kind.startswith("ivf"):
            return self.params["nprobe"] * widen >= self.nlist
        return self.params["efSearch"] * widen >= 4096  # the efSearch cap of _search_params

    def _search_params(self, selector, widen: float = 1.0) -> Any:
        if self.kind.startswith("ivf"):
            nprobe = min(self.nlist, math.ceil(self.params["nprobe"] * widen))
            return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        if self.kind == "hnsw":
            ef = min(4096, math.ceil(self.params["efSearch"] * widen))
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        return None if selector is None else faiss.SearchParameters(sel=selector)

    def tune(
        self, queries: np.ndarray, truth: np.ndarray, k: int, query_ids: np.ndarray | None = None
    ) -> dict:
        """Smallest nprobe / efSearch whose recall@k against ``truth`` meets the target.

        ``query_ids``: the id of each query if it is itself indexed (dropped from results).
        """
        name = {"ivf": "nprobe", "ivfpq": "nprobe", "hnsw": "efSearch"}.get(self.kind)
        if name is None or len(queries) == 0:
            return {"recall": 1.0}
        limit = self.nlist if name == "nprobe" else 4096
        value, recall = 1 if name == "nprobe" else 16, 0.0
        while True:
            self.params[name] = min(value, limit)
            recall = _recall(self, queries, truth, k, query_ids)
            if recall >= self.options.target_recall or value >= limit:
                break
            value *= 2
        return {name: self.params[name], "recall": recall}

    # -- persistence ----------------------------------------------------------------
    def save(self, version: int) -> None:
        data = faiss.serialize_index(self.index)
        dead = np.fromiter(sorted(self.tombstones), np.int64)
        header = {
            "version": version,
            "kind": self.kind,
            "nlist": self.nlist,
            "params": self.params,
            "index_bytes": int(data.nbytes),
            "tombstones": len(dead),
        }
        path = self.directory / FILE_NAME
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(MAGIC + json.dumps(header).encode() + b"\n")
            data.tofile(f)
            dead.tofile(f)
        self._version = version

    def _load(self) -> None:
        with open(self.directory / FILE_NAME, "rb") as f:
            if f.readline() != MAGIC:
                raise ValueError(f"{self.directory / FILE_NAME} is not a clipforge FAISS file")
            header = json.loads(f.readline())
            data = np.fromfile(f, dtype=np.uint8, count=header["index_bytes"])
            dead = np.fromfile(f, dtype=np.int64, count=header["tombstones"])
        self.index = faiss.deserialize_index(data)
        self.kind, self.nlist, self.params = header["kind"], header["nlist"], header["params"]
        self.half = None
        if self.kind == "flat":
            self.half = HalfScan(self.dim)
            flat = faiss.downcast_index(self.index.index)
            self.half.add(self.ids(), flat.reconstruct_n(0, flat.ntotal))
        self.tombstones = set(dead.tolist())
        self._version = header["version"]


@contextlib.contextmanager
def _one_thread(active: bool) -> Iterator[None]:
    """One OpenMP thread for a single query: fanning out only costs, and much more on busy
    cores (measured 10x slower in a server's worker thread, whose OpenMP setting is its
    own: ``omp_set_num_threads`` elsewhere does not reach it). Restored afterwards."""
    if not active:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _training_sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    limit = max(nlist * 64, 10_000)
    if len(vectors) <= limit:
        return vectors
    rows = np.random.default_rng(0).choice(len(vectors), limit, replace=False)
    return vectors[np.sort(rows)]


def _recall(store: FaissStore, queries: np.ndarray, truth: np.ndarray, k: int, query_ids) -> float:
    extra = 0 if query_ids is None else 1
    _, found = store.search(queries, k + extra)
    hits = 0
    for row, ids in enumerate(found):
        if query_ids is not None:
            ids = ids[ids != query_ids[row]]
        hits += len(np.intersect1d(ids[:k], truth[row, :k]))
    return hits / (len(queries) * k)


def open_faiss(directory: Path, dim: int, options: StoreOptions) -> FaissStore:
    """Factory of the ``faiss`` backend."""
    return FaissStore(directory, dim, options)
