"""Search filters (translated to SQL pre-selection) and search results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ocr import TextMatch


@dataclass(frozen=True)
class Filters:
    """Restrictions applied inside the search (the allowed ids are selected in SQL first).

    Attributes:
        path_glob: SQLite ``GLOB`` pattern on the absolute path (``*`` also matches ``/``).
        min_mtime, max_mtime: modification time range, inclusive (datetimes or Unix seconds).
        min_width, min_height: minimum image size in pixels.
        min_score: drop results whose cosine similarity is below this.
    """

    path_glob: str | None = None
    min_mtime: datetime | float | None = None
    max_mtime: datetime | float | None = None
    min_width: int | None = None
    min_height: int | None = None
    min_score: float | None = None

    def restricts(self) -> bool:
        """Whether any metadata condition (not just ``min_score``) is set."""
        return bool(self.sql()[1])

    def sql(self) -> tuple[str, list]:
        """``(condition, parameters)`` for ``SELECT id FROM images WHERE ...``."""
        terms: list[str] = []
        params: list = []
        if self.path_glob:
            terms.append("path GLOB ?")
            params.append(self.path_glob)
        if self.min_mtime is not None:
            terms.append("mtime_ns >= ?")
            params.append(_ns(self.min_mtime))
        if self.max_mtime is not None:
            terms.append("mtime_ns <= ?")
            params.append(_ns(self.max_mtime))
        if self.min_width:
            terms.append("width >= ?")
            params.append(int(self.min_width))
        if self.min_height:
            terms.append("height >= ?")
            params.append(int(self.min_height))
        return (" AND ".join(terms) or "1"), params


def _ns(value: datetime | float) -> int:
    seconds = value.timestamp() if isinstance(value, datetime) else float(value)
    return int(seconds * 1_000_000_000)


@dataclass(frozen=True)
class SearchHit:
    """One result: the image's id and metadata with its cosine similarity to the query.

    With recognised text (``--ocr``): ``rrf`` is the reciprocal-rank-fusion score that
    ordered a fused query, ``text`` where the query's words occur in the image's text.
    """

    id: int
    path: str
    score: float
    width: int
    height: int
    mtime: float
    rrf: float | None = None
    text: TextMatch | None = None

    def to_dict(self) -> dict:
        out = {
            "id": self.id,
            "path": self.path,
            "score": round(self.score, 6),
            "width": self.width,
            "height": self.height,
            "mtime": self.mtime,
        }
        if self.rrf is not None:
            out["rrf"] = round(self.rrf, 6)
        if self.text is not None:
            out["ocr"] = self.text.to_dict()
        return out
