"""Video frames in the index: extra searchable vectors that belong to one indexed file.

A video is one ``images`` row (its path, size, hash, the vector of its first sampled
frame) plus one ``frames`` row per sampled frame with its timestamp in seconds. The first
frame's row shares the video's id and keeps no vector of its own (it is the ``images``
row's); every other frame has its own id, drawn from the same ``AUTOINCREMENT`` counter as
images, so ids are never shared or reused and the vector backend holds images and frames
under one id space.

Deleting a video's ``images`` row (re-indexed, removed, replaced by an error) deletes its
frames inside the same transaction (a trigger) and queues their ids in ``frames_gone``;
:class:`FrameAwareStore` drops the queued ids from the backend with the video's own id.
A crash in between leaves only stale backend ids, which reconciling by content removes.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Sequence

import numpy as np

from .store import VectorStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS frames_image ON frames (image_id);
CREATE TABLE IF NOT EXISTS videos (
    image_id INTEGER PRIMARY KEY,
    duration REAL NOT NULL,
    frames INTEGER NOT NULL,
    seconds REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS frames_gone (id INTEGER PRIMARY KEY);
CREATE TRIGGER IF NOT EXISTS images_drop_frames AFTER DELETE ON images BEGIN
    INSERT OR IGNORE INTO frames_gone
        SELECT id FROM frames WHERE image_id = OLD.id AND id != OLD.id;
    DELETE FROM frames WHERE image_id = OLD.id;
    DELETE FROM videos WHERE image_id = OLD.id;
END;
"""

VECTORS = (
    "(SELECT id, vector FROM images"
    " UNION ALL SELECT id, vector FROM frames WHERE vector IS NOT NULL)"
)
"""Every searchable ``(id, vector)``: images (a video's first frame) and further frames."""


def migrate(db: sqlite3.Connection) -> None:
    """Create the frame tables and the trigger (idempotent)."""
    db.executescript(SCHEMA)


def insert_frames(
    db: sqlite3.Connection,
    image_id: int,
    timestamps: Sequence[float],
    vectors: np.ndarray,
    duration: float,
    seconds: float,
) -> list[int]:
    """Inside a transaction: record a video's sampled frames; the first is the ``images``
    row ``image_id`` itself (its vector is there). Returns the ids of the further frames."""
    count = len(timestamps)
    ids = list(range(image_id + 1, image_id + count))
    db.execute(
        "INSERT INTO frames (id, image_id, timestamp, vector) VALUES (?, ?, ?, NULL)",
        (image_id, image_id, float(timestamps[0])),
    )
    db.executemany(
        "INSERT INTO frames (id, image_id, timestamp, vector) VALUES (?, ?, ?, ?)",
        [
            (id_, image_id, float(t), np.ascontiguousarray(v, np.float32).tobytes())
            for id_, t, v in zip(ids, timestamps[1:], vectors[1:], strict=True)
        ],
    )
    if ids:  # the next image row (AUTOINCREMENT) starts after the frames' ids
        db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'images'", (ids[-1],))
    db.execute(
        "INSERT OR REPLACE INTO videos VALUES (?, ?, ?, ?)",
        (image_id, float(duration), count, float(seconds)),
    )
    return ids


def file_ids(db: sqlite3.Connection) -> np.ndarray:
    """Ids of the indexed files (images and videos), without the videos' further frames."""
    return np.fromiter((r[0] for r in db.execute("SELECT id FROM images")), np.int64)


def has_frames(db: sqlite3.Connection) -> bool:
    """Whether any video frame besides the videos' own rows is indexed."""
    row = db.execute("SELECT EXISTS (SELECT 1 FROM frames WHERE vector IS NOT NULL)")
    return bool(row.fetchone()[0])


def owners(db: sqlite3.Connection, ids: Iterable[int]) -> dict[int, tuple[int, float]]:
    """``{frame id: (video's image id, timestamp)}`` for the given ids that are frames
    (a video's own id included); plain images are absent."""
    ids = sorted({int(i) for i in ids if i >= 0})
    found: dict[int, tuple[int, float]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for id_, image_id, timestamp in db.execute(
            f"SELECT id, image_id, timestamp FROM frames WHERE id IN ({marks})", chunk
        ):
            found[id_] = (image_id, timestamp)
    return found


def with_frames(db: sqlite3.Connection, image_ids: np.ndarray) -> np.ndarray:
    """The given image ids plus the ids of their videos' further frames (filters select
    videos; their frames go with them)."""
    extra: list[int] = []
    wanted = image_ids.tolist()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
        extra += [
            r[0]
            for r in db.execute(
                f"SELECT id FROM frames WHERE vector IS NOT NULL AND image_id IN ({marks})",
                chunk,
            )
        ]
    if not extra:
        return image_ids
    return np.concatenate([image_ids, np.asarray(extra, np.int64)])


def video_totals(db: sqlite3.Connection) -> dict:
    """Indexed videos, their hours, frames and the indexing time (seconds per hour)."""
    videos, duration, frames, seconds = db.execute(
        "SELECT COUNT(*), TOTAL(duration), TOTAL(frames), TOTAL(seconds) FROM videos"
    ).fetchone()
    hours = duration / 3600
    return {
        "videos": videos,
        "video_hours": round(hours, 4),
        "video_frames": int(frames),
        "seconds_per_video_hour": round(seconds / hours, 1) if hours else None,
    }


class FrameAwareStore:
    """A :class:`VectorStore` whose ``remove`` also drops the queued frames of removed
    videos (``frames_gone``); everything else is the wrapped backend's."""

    def __init__(self, inner: VectorStore, db: sqlite3.Connection) -> None:
        self.inner = inner
        self.db = db
        self.dim = inner.dim

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def version(self) -> int:
        return self.inner.version

    def describe(self) -> dict:
        return self.inner.describe()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.inner.add(ids, vectors)

    def remove(self, ids: np.ndarray) -> None:
        gone = np.fromiter((r[0] for r in self.db.execute("SELECT id FROM frames_gone")), np.int64)
        self.inner.remove(np.concatenate([np.asarray(ids, np.int64).reshape(-1), gone]))
        if len(gone):  # bookkeeping only (reconciling compares ids by content): best effort
            with contextlib.suppress(sqlite3.OperationalError):
                self.db.executemany(
                    "DELETE FROM frames_gone WHERE id = ?", [(int(i),) for i in gone]
                )

    def ids(self) -> np.ndarray:
        return self.inner.ids()

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.search(queries, k, allowed)

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.inner.rebuild(ids, vectors)

    def wants_rebuild(self) -> bool:
        return self.inner.wants_rebuild()

    def tune(
        self, queries: np.ndarray, truth: np.ndarray, k: int, query_ids: np.ndarray | None = None
    ) -> dict:
        return self.inner.tune(queries, truth, k, query_ids)

    def save(self, version: int) -> None:
        self.inner.save(version)
