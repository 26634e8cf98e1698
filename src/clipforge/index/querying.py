"""Query vectors (weighted text + image − negatives), filtered search, near-duplicates."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..embedding import embed_images, embed_texts
from ..errors import UsageError
from ..models.protocols import ClipModel
from ..preprocess import decode_image
from ..runtime import Precision
from . import frames
from .filters import order, score_cutoffs
from .photo_store import decorate
from .query import Filters, SearchHit

if TYPE_CHECKING:
    from .index import Index

EXACT_SUBSET = 4096
"""Filters selecting at most this many images are answered by exact search on their vectors."""


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def text_vector(
    model: ClipModel, texts: str | Sequence[str], precision: Precision | None = None
) -> np.ndarray:
    """Mean of the normalised text embeddings, normalised."""

    texts = [texts] if isinstance(texts, str) else list(texts)
    return _unit(embed_texts(model, texts, precision=precision).mean(axis=0))


def image_vector(model: ClipModel, image, precision: Precision | None = None) -> np.ndarray:
    """Normalised embedding of an image (path, PIL image or encoded bytes)."""

    if isinstance(image, bytes | bytearray):

        image = decode_image(io.BytesIO(image), "<upload>")
    result = embed_images(model, [image], precision=precision)
    if result.failures:
        raise ValueError(f"cannot read the query image: {result.failures[0][1]}")
    return _unit(result.embeddings[0])


def query_vector(
    model: ClipModel,
    text: str | Sequence[str] | None,
    image: str | os.PathLike | Image.Image | bytes | None,
    negative: str | Sequence[str] | None,
    text_weight: float = 1.0,
    image_weight: float = 1.0,
    negative_weight: float = 0.5,
    precision: Precision | None = None,
) -> np.ndarray:
    """``text_weight * t + image_weight * i - negative_weight * n``, normalised."""
    if not text and image is None:
        raise ValueError("give a text query, an image query, or both")
    parts = []
    if text:
        parts.append(text_weight * text_vector(model, text, precision))
    if image is not None:
        parts.append(image_weight * image_vector(model, image, precision))
    if negative:
        parts.append(-negative_weight * text_vector(model, negative, precision))
    return _unit(np.sum(parts, axis=0)).astype(np.float32)


def search_vectors(
    index: Index, queries: np.ndarray, k: int, filters: Filters | None
) -> list[list[SearchHit]]:
    """Filtered top-k: metadata filters select allowed ids in SQL, then the backend (or
    exact search, for small selections) ranks only those."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise UsageError(f"k must be a positive whole number, got {k!r}")
    k = min(int(k), index.max_k, len(index.store))
    if k == 0:
        return [[] for _ in queries]
    filters = filters or Filters()
    allowed = None
    if filters.restricts():
        where, params = filters.sql()
        allowed = index.meta.select_ids(where, params)
        if len(allowed) == 0:
            return [[] for _ in queries]
    cutoffs = score_cutoffs(index, queries, filters.min_score)
    if not frames.has_frames(index.meta.db):
        scores, ids = _ranked(index, queries, k, allowed)
        return _finish(index, _hits(index, scores, ids, cutoffs, {}), k, filters)
    if allowed is not None:
        allowed = frames.with_frames(index.meta.db, allowed)
    total = len(index.store) if allowed is None else len(allowed)
    fetch = k
    while True:  # videos hold many frames: fetch more until k distinct files are found
        scores, ids = _ranked(index, queries, fetch, allowed)
        owners = frames.owners(index.meta.db, ids.ravel().tolist())
        results = _hits(index, scores, ids, cutoffs, owners)
        if fetch >= total or all(len(hits) >= k for hits in results):
            return _finish(index, results, k, filters)
        fetch = min(total, fetch * 4)


def _finish(
    index: Index, results: list[list[SearchHit]], k: int, filters: Filters
) -> list[list[SearchHit]]:
    """The top ``k`` by score of each query, with photo metadata, in the requested order."""
    return [order(decorate(index.meta, hits[:k]), filters.sort) for hits in results]


def _ranked(
    index: Index, queries: np.ndarray, k: int, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    if allowed is not None and len(allowed) <= EXACT_SUBSET:
        return _exact(index, queries, k, allowed)
    return index.store.search(queries, k, allowed)


def _hits(
    index: Index,
    scores: np.ndarray,
    ids: np.ndarray,
    cutoffs: np.ndarray | None,
    owners: dict[int, tuple[int, float]],
) -> list[list[SearchHit]]:
    """Hits in rank order, down to each query's score cutoff; a video (its frames:
    ``owners``) once, at its best frame."""
    files = {id_: owners.get(id_, (id_, None)) for id_ in ids[ids >= 0].tolist()}
    rows = index.meta.rows({file for file, _ in files.values()})
    results = []
    for q, (score_row, id_row) in enumerate(zip(scores, ids, strict=True)):
        hits: list[SearchHit] = []
        seen: set[int] = set()
        for score, frame in zip(score_row.tolist(), id_row.tolist(), strict=True):
            id_, timestamp = files.get(frame, (-1, None))
            if id_ not in rows or id_ in seen:
                continue
            if cutoffs is not None and score < cutoffs[q]:
                break
            seen.add(id_)
            row = rows[id_]
            hits.append(SearchHit(id_, row.path, score, row.width, row.height, row.mtime_ns / 1e9))
            if timestamp is not None:
                hits[-1] = dataclasses.replace(hits[-1], timestamp=timestamp)
        results.append(hits)
    return results


def _exact(
    index: Index, queries: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    ids, vectors = index.meta.vectors(allowed, queries.shape[1])
    scores = queries @ vectors.T
    k = min(k, len(ids))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, axis=1), ids[top]


def near_duplicates(index: Index, threshold: float = 0.95, neighbours: int = 16) -> list[list[str]]:
    """Groups of paths whose images are at cosine similarity >= ``threshold`` (connected
    components over each image's nearest ``neighbours``), exact copies included."""
    ids, vectors = index.meta.vectors(None, index._dim)
    keep = np.isin(ids, frames.file_ids(index.meta.db))  # files, not a video's further frames
    ids, vectors = ids[keep], vectors[keep]
    parent = {int(i): int(i) for i in ids}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for start in range(0, len(ids), 1024):
        scores, found = index.store.search(vectors[start : start + 1024], neighbours + 1)
        for row, (score_row, id_row) in enumerate(zip(scores, found, strict=True)):
            me = int(ids[start + row])
            for score, other in zip(score_row.tolist(), id_row.tolist(), strict=True):
                if other >= 0 and other != me and score >= threshold and other in parent:
                    parent[find(other)] = find(me)
    groups: dict[int, list[int]] = {}
    for id_ in parent:
        groups.setdefault(find(id_), []).append(id_)
    rows = index.meta.rows(parent)
    copies: dict[int, list[str]] = {}
    for path, original in index.meta.duplicates():
        copies.setdefault(original, []).append(path)
    out = []
    for members in groups.values():
        paths = sorted(rows[m].path for m in members) + sorted(
            p for m in members for p in copies.get(m, [])
        )
        if len(paths) > 1:
            out.append(paths)
    return sorted(out)
