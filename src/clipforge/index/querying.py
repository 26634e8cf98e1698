"""Query vectors (weighted text + image − negatives), filtered search, near-duplicates."""

from __future__ import annotations

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
from .query import Filters, SearchHit

if TYPE_CHECKING:
    from .index import Index

EXACT_SUBSET = 4096
"""Filters selecting at most this many images are answered by exact search on their vectors."""


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def text_vector(model: ClipModel, texts: str | Sequence[str]) -> np.ndarray:
    """Mean of the normalised text embeddings, normalised."""

    texts = [texts] if isinstance(texts, str) else list(texts)
    return _unit(embed_texts(model, texts).mean(axis=0))


def image_vector(model: ClipModel, image) -> np.ndarray:
    """Normalised embedding of an image (path, PIL image or encoded bytes)."""

    if isinstance(image, bytes | bytearray):

        image = decode_image(io.BytesIO(image), "<upload>")
    result = embed_images(model, [image])
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
) -> np.ndarray:
    """``text_weight * t + image_weight * i - negative_weight * n``, normalised."""
    if not text and image is None:
        raise ValueError("give a text query, an image query, or both")
    parts = []
    if text:
        parts.append(text_weight * text_vector(model, text))
    if image is not None:
        parts.append(image_weight * image_vector(model, image))
    if negative:
        parts.append(-negative_weight * text_vector(model, negative))
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
    if allowed is not None and len(allowed) <= EXACT_SUBSET:
        scores, ids = _exact(index, queries, k, allowed)
    else:
        scores, ids = index.store.search(queries, k, allowed)
    rows = index.meta.rows(ids[ids >= 0].tolist())
    results = []
    for score_row, id_row in zip(scores, ids, strict=True):
        hits = []
        for score, id_ in zip(score_row.tolist(), id_row.tolist(), strict=True):
            if id_ < 0 or id_ not in rows:
                continue
            if filters.min_score is not None and score < filters.min_score:
                break
            row = rows[id_]
            hits.append(SearchHit(id_, row.path, score, row.width, row.height, row.mtime_ns / 1e9))
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
