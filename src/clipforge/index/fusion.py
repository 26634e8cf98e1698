"""Hybrid search: the CLIP ranking and the recognised-text ranking, fused by reciprocal rank.

Reciprocal-rank fusion (Cormack, Clarke and Büttcher, "Reciprocal rank fusion outperforms
Condorcet and individual rank learning methods", SIGIR 2009) scores each item by
``sum over rankings of 1 / (k + rank)`` with ``k = 60``: it needs no calibration between
a cosine similarity and a BM25 score, only the two orders.

Modes of a query (``ocr=``): ``"auto"`` fuses when the index holds recognised text and the
query has a word of 3+ characters, else it is a plain CLIP search; ``"only"`` returns the
text matches alone (best BM25 first); ``"off"`` is a plain CLIP search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import UsageError
from . import ocr
from .query import Filters, SearchHit

if TYPE_CHECKING:
    from .index import Index

OcrMode = Literal["auto", "only", "off"]
OCR_MODES: tuple[str, ...] = ("auto", "only", "off")
RRF_K = 60
"""Cormack et al.'s constant: damps the weight of the very first ranks."""
FUSION_DEPTH = 100
"""Each ranking contributes at least this many candidates (more when ``k`` is larger)."""


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int = RRF_K
) -> list[tuple[int, float]]:
    """``(id, score)`` by descending ``sum 1 / (k + rank)`` (ranks from 1); ties keep the
    order of first appearance, earlier rankings first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, id_ in enumerate(ranking, start=1):
            scores[int(id_)] = scores.get(int(id_), 0.0) + 1.0 / (k + rank)
    order = {id_: i for i, id_ in enumerate(scores)}
    return sorted(scores.items(), key=lambda item: (-item[1], order[item[0]]))


def check_mode(mode: str) -> OcrMode:
    """``mode`` if it is one of :data:`OCR_MODES`, else a :class:`UsageError`."""
    if mode not in OCR_MODES:
        raise UsageError(f"ocr must be one of {', '.join(OCR_MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def wants_text(index: Index, text, mode: str, has: bool | None = None) -> bool:
    """Whether a query in ``mode`` goes through the text side (raises for a text-only
    query the index cannot answer). ``has``: whether the index holds recognised text, if
    the caller knows (else it is looked up)."""
    mode = check_mode(mode)
    if mode == "off":
        return False
    if has is None:
        with index.lock:
            has = ocr.has_text(index.meta.db)
    if mode == "only":
        if not has:
            raise ocr.NoOcrTextError(
                "this index holds no recognised text: index it with --ocr first"
            )
        if ocr.fts_query(text) is None:
            raise UsageError(f"a text-only query needs a word of {ocr.MIN_WORD} or more characters")
        return True
    return has and ocr.fts_query(text) is not None


def hybrid_search(
    index: Index,
    vector: np.ndarray,
    text,
    k: int,
    filters: Filters | None,
    mode: str,
    has: bool | None = None,
) -> list[SearchHit]:
    """Top-``k`` hits of one query: CLIP only, fused with the text matches, or text only.

    ``score`` stays the cosine similarity to ``vector`` for every hit; fused hits carry
    their fusion score in ``rrf`` and text matches their :class:`~.ocr.TextMatch`.
    ``filters`` restrict both sides; ``min_score`` drops CLIP candidates only (a literal
    text match is kept whatever its cosine).
    """
    if not wants_text(index, text, mode, has):
        return index.search_vectors(vector[None], k=k, filters=filters)[0]
    filters = filters or Filters()
    query = ocr.fts_query(text)
    assert query is not None
    depth = max(int(k), FUSION_DEPTH)
    with index.lock:
        where = filters.sql() if filters.restricts() else None
        matched = ocr.text_matches(index.meta.db, query, depth, where)
        if mode == "only":
            return _hits(index, vector, [(i, None) for i in matched[:k]], query)
        clip = index.search_vectors(vector[None], k=depth, filters=filters)[0]
        fused = reciprocal_rank_fusion([[h.id for h in clip], matched])[:k]
        return _hits(index, vector, fused, query)


def _hits(
    index: Index, vector: np.ndarray, ranked: Sequence[tuple[int, float | None]], query: str
) -> list[SearchHit]:
    """SearchHits in ``ranked`` order, with cosine scores and text-match details."""
    ids = np.asarray([i for i, _ in ranked], np.int64)
    stored_ids, vectors = index.meta.vectors(ids, len(vector))
    cosine = dict(zip(stored_ids.tolist(), (vectors @ vector).tolist(), strict=True))
    rows = index.meta.rows(ids.tolist())
    details = ocr.match_details(index.meta.db, query, ids.tolist())
    hits = []
    for id_, fused in ranked:
        row = rows.get(id_)
        if row is None:
            continue
        hit = SearchHit(id_, row.path, cosine[id_], row.width, row.height, row.mtime_ns / 1e9)
        hits.append(replace(hit, rrf=fused, text=details.get(id_)))
    return hits
