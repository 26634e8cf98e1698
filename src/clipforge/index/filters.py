"""Photo filters inside the search (capture date, place, camera), result order, and the
calibrated relevance cutoff ``min_score="auto"``.

**Dates.** A bound with a time zone (an aware ``datetime``, an ISO string with an offset,
or Unix seconds) is an instant and compares with the capture instant; a bound without one
(``"2024-07-01"``, a naive ``datetime``, a ``date``) is a wall-clock time and compares with
the clock where the photo was taken, so "July 1st" means July 1st on the photo's own
calendar. A date-only upper bound includes its whole day.

**Relevance cutoff.** ``min_score="auto"`` keeps, for each query, the hits whose score is an
outlier above the query's score distribution over the collection: the cosine scores of the
query against every stored vector (a fixed random sample of :data:`AUTO_SAMPLE` for larger
collections) give a median ``m`` and a median absolute deviation ``MAD``, and a hit is kept
when its robust z-score ``(s - m) / (1.4826 * MAD)`` is at least :data:`AUTO_Z` (3.5, the
modified z-score outlier rule of Iglewicz and Hoaglin). Most photos are unrelated to any one
query, so the median and MAD describe the background and are not moved by the relevant few
(up to half the collection). Collections of fewer than :data:`AUTO_MIN_IMAGES` images are
not cut.
"""

from __future__ import annotations

import math
import weakref
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    from .index import Index
    from .query import Filters, SearchHit

AUTO_Z = 3.5
AUTO_SAMPLE = 20_000
AUTO_MIN_IMAGES = 8
SORTS = ("score", "date", "date-asc")
"""``score``: most similar first; ``date``: newest capture date first; ``date-asc``: oldest."""

_TAKEN = "COALESCE((SELECT p.{column} FROM photos p WHERE p.id = images.id), mtime_ns / 1e9)"
_SAMPLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def parse_when(value: datetime | date | str | float, *, end: bool = False) -> tuple[str, float]:
    """``(column, seconds)`` of a date bound: ``taken_at`` for instants, ``taken_local``
    (wall clock read as UTC) for zone-less times. ``end``: a date-only bound covers its day."""
    if isinstance(value, bool):
        raise UsageError(f"not a date: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise UsageError(f"not a date: {value!r}")
        return "taken_at", float(value)
    whole_day = isinstance(value, date) and not isinstance(value, datetime)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise UsageError(
                f"not an ISO date: {value!r} (e.g. 2024-07-01 or 2024-07-01T18:00+02:00)"
            ) from exc
        whole_day = len(value.strip()) == 10
        value = parsed
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if whole_day and end:
        value = value + timedelta(days=1) - timedelta(microseconds=1)
    if value.tzinfo is not None:
        return "taken_at", value.timestamp()
    return "taken_local", value.replace(tzinfo=timezone.utc).timestamp()


def photo_terms(filters: Filters) -> tuple[list[str], list]:
    """SQL terms (on ``images``) for the capture-date, place and camera filters."""
    terms: list[str] = []
    params: list = []
    for value, op, end in ((filters.taken_after, ">=", False), (filters.taken_before, "<=", True)):
        if value is not None:
            column, seconds = parse_when(value, end=end)
            terms.append(f"{_TAKEN.format(column=column)} {op} ?")
            params.append(seconds)
    if filters.near is not None:
        lat, lon, radius = check_near(filters.near, filters.radius_km)
        span = math.degrees(radius / 6371.0088) + 1e-9  # latitude box first (indexed)
        terms.append(
            "id IN (SELECT id FROM photos WHERE lat BETWEEN ? AND ?"
            " AND haversine_km(lat, lon, ?, ?) <= ?)"
        )
        params += [lat - span, lat + span, lat, lon, radius]
    if filters.camera:
        pattern = filters.camera.strip().replace("\\", "\\\\").replace("%", "\\%")
        terms.append(
            "id IN (SELECT id FROM photos WHERE"
            " (COALESCE(make, '') || ' ' || COALESCE(model, '')) LIKE ? ESCAPE '\\')"
        )
        params.append("%" + pattern.replace("_", "\\_") + "%")
    return terms, params


def check_near(near, radius_km: float | None) -> tuple[float, float, float]:
    """Validated ``(lat, lon, radius_km)``; ``near`` is ``(lat, lon)`` or ``"lat,lon"``."""
    if isinstance(near, str):
        try:
            near = tuple(float(x) for x in near.split(","))
        except ValueError:
            near = ()
    if len(near) != 2:
        raise UsageError(f"near must be LAT,LON in degrees, got {near!r}")
    lat, lon = (float(x) for x in near)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise UsageError(f"near: latitude must be in [-90, 90], longitude in [-180, 180]: {near}")
    if radius_km is None or not math.isfinite(radius_km) or radius_km <= 0:
        raise UsageError(f"near needs a positive radius_km, got {radius_km!r}")
    return lat, lon, float(radius_km)


def check_sort(sort: str) -> str:
    if sort not in SORTS:
        raise UsageError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    return sort


def check_min_score(value) -> float | str | None:
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise UsageError(f"min_score must be a number or 'auto', got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(value):
        raise UsageError(f"min_score must be a finite number or 'auto', got {value!r}")
    return float(value)


def robust_cutoff(background: np.ndarray, z: float = AUTO_Z) -> float:
    """``median + z * 1.4826 * MAD`` of one query's scores (``-inf`` for tiny collections)."""
    if background.size < AUTO_MIN_IMAGES:
        return -math.inf
    median = float(np.median(background))
    mad = float(np.median(np.abs(background - median)))
    return median + z * 1.4826 * max(mad, 1e-6)


def _sample(index: Index) -> np.ndarray:
    """The stored vectors the cutoff is computed on (cached per index version)."""
    version = index.meta.version
    cached = _SAMPLES.get(index)
    if cached is not None and cached[0] == version:
        return cached[1]
    ids = np.sort(index.meta.all_ids())
    if len(ids) > AUTO_SAMPLE:
        ids = np.sort(np.random.default_rng(0).choice(ids, AUTO_SAMPLE, replace=False))
    _, vectors = index.meta.vectors(ids, index._dim)
    _SAMPLES[index] = (version, vectors)
    return vectors


def score_cutoffs(index: Index, queries: np.ndarray, min_score) -> np.ndarray | None:
    """Per-query minimum score: ``min_score`` itself, the automatic cutoff, or ``None``."""
    if min_score is None:
        return None
    if min_score != "auto":
        return np.full(len(queries), float(min_score))
    background = queries @ _sample(index).T
    return np.asarray([robust_cutoff(row) for row in background])


def order(hits: list[SearchHit], sort: str) -> list[SearchHit]:
    """Hits in the requested order (ties by score, then id)."""
    if sort == "score":
        return hits
    sign = -1.0 if sort == "date" else 1.0
    return sorted(hits, key=lambda h: (sign * (h.taken_at or 0.0), -h.score, h.id))
