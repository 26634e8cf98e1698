"""Search filters (translated to SQL pre-selection) and search results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from .filters import check_min_score, check_sort, photo_terms

if TYPE_CHECKING:
    from .ocr import TextMatch


@dataclass(frozen=True)
class Filters:
    """Restrictions applied inside the search (the allowed ids are selected in SQL first).

    Attributes:
        path_glob: SQLite ``GLOB`` pattern on the absolute path (``*`` also matches ``/``).
        min_mtime, max_mtime: modification time range, inclusive (datetimes or Unix seconds).
        min_width, min_height: minimum image size in pixels.
        min_score: drop results whose cosine similarity is below this; ``"auto"``: a
            per-query cutoff from the query's score distribution over the collection
            (:mod:`clipforge.index.filters`).
        taken_after, taken_before: capture date range, inclusive (EXIF, else file time): an
            ISO string, ``date``/``datetime`` (zone-less: the photo's own wall clock) or
            Unix seconds; a date-only ``taken_before`` includes its whole day.
        near, radius_km: only photos with a GPS position within ``radius_km`` of
            ``near = (lat, lon)`` (degrees; ``"lat,lon"`` also accepted).
        camera: case-insensitive substring of the camera's "make model".
        sort: ``"score"`` (default), ``"date"`` (newest first) or ``"date-asc"``; the top
            ``k`` by score are kept first, then ordered.
    """

    path_glob: str | None = None
    min_mtime: datetime | float | None = None
    max_mtime: datetime | float | None = None
    min_width: int | None = None
    min_height: int | None = None
    min_score: float | str | None = None
    taken_after: datetime | date | str | float | None = None
    taken_before: datetime | date | str | float | None = None
    near: tuple[float, float] | str | None = None
    radius_km: float | None = None
    camera: str | None = None
    sort: str = "score"

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_score", check_min_score(self.min_score))
        check_sort(self.sort)
        self.sql()  # refuse malformed dates, places and ranges at once

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
        more_terms, more_params = photo_terms(self)
        terms += more_terms
        params += more_params
        return (" AND ".join(terms) or "1"), params


def _ns(value: datetime | float) -> int:
    seconds = value.timestamp() if isinstance(value, datetime) else float(value)
    return int(seconds * 1_000_000_000)


@dataclass(frozen=True)
class SearchHit:
    """One result: the image's id and metadata with its cosine similarity to the query.

    ``timestamp``: for a video, the second of its best-matching sampled frame (else ``None``).
    With recognised text (``--ocr``): ``rrf`` is the reciprocal-rank-fusion score that
    ordered a fused query, ``text`` where the query's words occur in the image's text.
    """

    id: int
    path: str
    score: float
    width: int
    height: int
    mtime: float
    timestamp: float | None = None
    taken: str | None = None  # capture date, ISO 8601 (with its offset when known)
    taken_at: float | None = None  # capture instant, Unix seconds
    taken_source: str | None = None  # "exif", "exif-local" (no offset) or "file"
    lat: float | None = None
    lon: float | None = None
    camera: str | None = None
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
            "taken": self.taken,
            "taken_source": self.taken_source,
            "lat": self.lat,
            "lon": self.lon,
            "camera": self.camera,
        }
        if self.timestamp is not None:  # a video: the moment that matched
            out["timestamp"] = round(self.timestamp, 3)
        if self.rrf is not None:
            out["rrf"] = round(self.rrf, 6)
        if self.text is not None:
            out["ocr"] = self.text.to_dict()
        return out
