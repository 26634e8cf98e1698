"""The ``photos`` side table of ``metadata.sqlite``: capture date, place and camera per image.

One row per indexed image (same id), written by :func:`backfill` after each indexing run,
which also fills it for databases made before it existed; a trigger drops a row with its
image. Rows are keyed by content id, so a renamed or touched file keeps its row.
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .exif import PhotoMeta, photo_meta
from .metadata import _fs
from .photos import plugin_errors_now_fixable, register_plugins

if TYPE_CHECKING:
    from .metadata import MetadataStore
    from .query import SearchHit

PHOTOS_SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY,
    taken_at REAL NOT NULL,
    taken_local REAL NOT NULL,
    taken_offset INTEGER,
    taken_source TEXT NOT NULL,
    lat REAL,
    lon REAL,
    make TEXT,
    model TEXT,
    orientation INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS photos_taken_at ON photos (taken_at);
CREATE INDEX IF NOT EXISTS photos_taken_local ON photos (taken_local);
CREATE INDEX IF NOT EXISTS photos_lat ON photos (lat);
CREATE TRIGGER IF NOT EXISTS photos_forget AFTER DELETE ON images
BEGIN DELETE FROM photos WHERE id = OLD.id; END;
"""
COLUMNS = (
    "taken_at, taken_local, taken_offset, taken_source, lat, lon, make, model, orientation"
)
EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), the sphere the ``--near`` distances are measured on."""


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def migrate_photos(db: sqlite3.Connection) -> None:
    """Migration "photos": create the side table and register ``haversine_km`` in SQL."""
    db.executescript(PHOTOS_SCHEMA)
    db.create_function("haversine_km", 4, _sql_haversine, deterministic=True)


def _sql_haversine(lat1, lon1, lat2, lon2) -> float | None:
    if None in (lat1, lon1, lat2, lon2):
        return None
    return haversine_km(lat1, lon1, lat2, lon2)


def backfill(meta: MetadataStore, chunk: int = 256) -> int:
    """Read EXIF for every image without a ``photos`` row; returns how many were added."""
    missing = meta.db.execute(
        "SELECT i.id, i.path, i.mtime_ns FROM images i LEFT JOIN photos p ON p.id = i.id"
        " WHERE p.id IS NULL"
    ).fetchall()
    for start in range(0, len(missing), chunk):
        rows = [
            (id_, *dataclasses.astuple(photo_meta(_fs(path), mtime_ns)))
            for id_, path, mtime_ns in missing[start : start + chunk]
        ]
        with meta.transaction() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO photos (id, {COLUMNS}) SELECT ?{', ?' * 9}"
                " WHERE EXISTS (SELECT 1 FROM images WHERE id = ?1)",
                rows,
            )
    return len(missing)


def retry_plugin_errors(meta: MetadataStore) -> None:
    """Forget the errors of files that needed a package now installed, so they are tried
    again; registers the HEIF/AVIF plugins in this process (it reads their headers too)."""
    register_plugins()
    fixable = plugin_errors_now_fixable({reason for _, reason in meta.errors()})
    if fixable:
        with meta.transaction() as db:
            db.executemany("DELETE FROM errors WHERE reason = ?", [(r,) for r in fixable])


def photo_rows(meta: MetadataStore, ids: Sequence[int]) -> dict[int, PhotoMeta]:
    """The stored :class:`PhotoMeta` of these image ids (those that have one)."""
    found: dict[int, PhotoMeta] = {}
    ids = [int(i) for i in ids]
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        for row in meta.db.execute(
            f"SELECT id, {COLUMNS} FROM photos WHERE id IN ({marks})", part
        ):
            found[row[0]] = PhotoMeta(*row[1:])
    return found


def decorate(meta: MetadataStore, hits: list[SearchHit]) -> list[SearchHit]:
    """Hits with their capture date, place and camera filled in."""
    photos = photo_rows(meta, [h.id for h in hits])
    out = []
    for hit in hits:
        p = photos.get(hit.id)
        if p is None:
            out.append(dataclasses.replace(hit, taken_at=hit.mtime))
            continue
        out.append(
            dataclasses.replace(
                hit, taken=p.taken, taken_at=p.taken_at, taken_source=p.taken_source,
                lat=p.lat, lon=p.lon, camera=p.camera,
            )  # fmt: skip
        )
    return out
