"""The SQLite metadata store: one row per indexed image (with its vector), errors, duplicates.

Every change happens in a transaction, and ``meta.version`` is bumped with each change to
the set of vectors, so a vector backend persisted at an older version is known to be stale.
Row ids come from ``AUTOINCREMENT`` and are never reused.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import frames
from .locking import IndexCorruptError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    indexed_at REAL NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_sha256 ON images (sha256);
CREATE INDEX IF NOT EXISTS images_mtime ON images (mtime_ns);
CREATE TABLE IF NOT EXISTS duplicates (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    original_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS errors (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""
COLUMNS = "id, path, size, mtime_ns, sha256, width, height, device, inode"

FILE_IDENTITY_COLUMNS = ("device", "inode")
"""Added by the "file identity" migration: which file (``st_dev``, ``st_ino``) was indexed."""


def file_identity(st: os.stat_result) -> tuple[int, int]:
    """``(device, inode)`` of a stat result, as signed 64-bit integers (SQLite's INTEGER)."""
    return _signed64(st.st_dev), _signed64(st.st_ino)


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def migrate_file_identity(db: sqlite3.Connection) -> None:
    """Migration "file identity": add the nullable ``device`` and ``inode`` columns to
    ``images``. Rows indexed before it keep NULLs (the service then checks them by hash)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        have = {row[1] for row in db.execute("PRAGMA table_info(images)")}
        for column in FILE_IDENTITY_COLUMNS:
            if column not in have:
                db.execute(f"ALTER TABLE images ADD COLUMN {column} INTEGER")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@dataclass(frozen=True)
class ImageRow:
    """Metadata of one indexed image."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    device: int | None = None  # file identity when indexed (see :func:`file_identity`);
    inode: int | None = None  # None for rows indexed before the "file identity" migration


@dataclass(frozen=True)
class FileState:
    """What the store knows about a path: ``kind`` is image, duplicate or error."""

    kind: str
    size: int
    mtime_ns: int
    sha256: str | None = None
    id: int | None = None


def _db(path: str) -> str | bytes:
    """A file name as SQLite stores it: text when it is valid UTF-8, else its exact bytes
    (a BLOB; Python keeps undecodable bytes of a name as surrogates, which text cannot hold)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def _fs(value: str | bytes) -> str:
    """A stored file name back as the ``str`` the file system gave (lossless)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _image_row(row: tuple) -> ImageRow:
    return ImageRow(row[0], _fs(row[1]), *row[2:])



class MetadataStore:
    """Thin typed wrapper over the SQLite database ``DIR/metadata.sqlite``."""

    def __init__(self, path: Path) -> None:

        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            migrate_file_identity(self.db)
            frames.migrate(self.db)
            self.db.execute("SELECT COUNT(*) FROM images").fetchone()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise IndexCorruptError(
                f"{self.path} is damaged ({exc}); restore it from a backup or index into a "
                "new --db"
            ) from exc

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on any exception)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta -----------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def version(self) -> int:
        return int(self.get_meta("version") or 0)

    def bump_version(self) -> int:
        """Inside a transaction: mark the set of vectors as changed."""
        version = self.version + 1
        self.set_meta("version", str(version))
        return version

    # -- images ---------------------------------------------------------------------
    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def states(self) -> dict[str, FileState]:
        """Every known path (image, duplicate or error) with its recorded size and mtime."""
        known: dict[str, FileState] = {}
        for path, size, mtime, sha, id_ in self.db.execute(
            "SELECT path, size, mtime_ns, sha256, id FROM images"
        ):
            known[_fs(path)] = FileState("image", size, mtime, sha, id_)
        for path, size, mtime, sha, id_ in self.db.execute(
            "SELECT path, size, mtime_ns, sha256, original_id FROM duplicates"
        ):
            known[_fs(path)] = FileState("duplicate", size, mtime, sha, id_)
        for path, size, mtime in self.db.execute("SELECT path, size, mtime_ns FROM errors"):
            known[_fs(path)] = FileState("error", size, mtime)
        return known

    def by_hash(self, sha256: str) -> ImageRow | None:
        row = self.db.execute(
            f"SELECT {COLUMNS} FROM images WHERE sha256 = ?", (sha256,)
        ).fetchone()
        return None if row is None else _image_row(row)

    def get(self, id_: int) -> ImageRow | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM images WHERE id = ?", (id_,)).fetchone()
        return None if row is None else _image_row(row)

    def rows(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        ids = [int(i) for i in ids]
        found: dict[int, ImageRow] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(
                f"SELECT {COLUMNS} FROM images WHERE id IN ({marks})", chunk
            ):
                found[row[0]] = _image_row(row)
        return found

    def insert_image(self, row: ImageRow, vector: np.ndarray) -> int:
        """Insert (replacing any row or record at the same path); returns the new id."""
        self.forget_path(row.path)
        stored = _db(row.path)
        cursor = self.db.execute(
            "INSERT INTO images (path, size, mtime_ns, sha256, width, height, indexed_at,"
            " vector, device, inode) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stored,
                row.size,
                row.mtime_ns,
                row.sha256,
                row.width,
                row.height,
                time.time(),
                np.ascontiguousarray(vector, dtype=np.float32).tobytes(),
                row.device,
                row.inode,
            ),
        )
        return int(cursor.lastrowid or 0)

    def move_image(
        self, id_: int, path: str, size: int, mtime_ns: int, identity: tuple[int, int] | None = None
    ) -> None:
        """A renamed (or merely touched) file: same content, new path/stat, same id.
        ``identity``: the file's :func:`file_identity` (``None``: unknown, checked by hash)."""
        device, inode = identity or (None, None)
        stored = _db(path)
        self.db.execute("DELETE FROM duplicates WHERE path = ?", (stored,))
        self.db.execute("DELETE FROM errors WHERE path = ?", (stored,))
        self.db.execute(
            "UPDATE images SET path = ?, size = ?, mtime_ns = ?, device = ?, inode = ?"
            " WHERE id = ?",
            (stored, size, mtime_ns, device, inode, id_),
        )

    def forget_path(self, path: str) -> int | None:
        """Drop whatever is recorded at ``path``; the removed image id, if it was one."""
        stored = _db(path)
        self.db.execute("DELETE FROM duplicates WHERE path = ?", (stored,))
        self.db.execute("DELETE FROM errors WHERE path = ?", (stored,))
        row = self.db.execute("SELECT id FROM images WHERE path = ?", (stored,)).fetchone()
        if row is None:
            return None
        self.db.execute("DELETE FROM images WHERE id = ?", (row[0],))
        return int(row[0])

    def add_duplicate(self, path: str, size: int, mtime_ns: int, sha: str, of: int) -> None:
        self.forget_path(path)
        self.db.execute(
            "INSERT INTO duplicates VALUES (?, ?, ?, ?, ?)", (_db(path), size, mtime_ns, sha, of)
        )

    def duplicates_of(self, id_: int) -> list[tuple[str, int, int]]:
        cursor = self.db.execute(
            "SELECT path, size, mtime_ns FROM duplicates WHERE original_id = ? ORDER BY path",
            (id_,),
        )
        return [(_fs(path), size, mtime) for path, size, mtime in cursor]

    def add_error(self, path: str, size: int, mtime_ns: int, reason: str) -> int | None:
        removed = self.forget_path(path)
        self.db.execute(
            "INSERT INTO errors VALUES (?, ?, ?, ?, ?)",
            (_db(path), size, mtime_ns, reason, time.time()),
        )
        return removed

    def errors(self) -> list[tuple[str, str]]:
        cursor = self.db.execute("SELECT path, reason FROM errors ORDER BY path")
        return [(_fs(path), reason) for path, reason in cursor]

    def duplicates(self) -> list[tuple[str, int]]:
        cursor = self.db.execute("SELECT path, original_id FROM duplicates ORDER BY path")
        return [(_fs(path), original) for path, original in cursor]

    # -- vectors ---------------------------------------------------------------------
    def all_ids(self) -> np.ndarray:
        """Every searchable id: images and video frames (see :mod:`.frames`)."""
        cursor = self.db.execute(f"SELECT id FROM {frames.VECTORS}")
        return np.fromiter((r[0] for r in cursor), np.int64)

    def vectors(self, ids: np.ndarray | None = None, dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of the given ids (all rows if ``None``, video frames included),
        in id order."""
        if ids is None:
            cursor = self.db.execute(f"SELECT id, vector FROM {frames.VECTORS} ORDER BY id")
            pairs = cursor.fetchall()
        else:
            pairs = []
            wanted = sorted(int(i) for i in ids)
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                pairs += self.db.execute(
                    f"SELECT id, vector FROM {frames.VECTORS} WHERE id IN ({marks}) ORDER BY id",
                    chunk,
                ).fetchall()
        out_ids = np.fromiter((p[0] for p in pairs), np.int64, len(pairs))
        if not pairs:
            return out_ids, np.zeros((0, dim), np.float32)
        return out_ids, np.frombuffer(b"".join(p[1] for p in pairs), np.float32).reshape(
            len(pairs), -1
        )

    def select_ids(self, where: str, params: list) -> np.ndarray:
        """Ids of the rows matching an SQL condition (the search filters)."""
        cursor = self.db.execute(f"SELECT id FROM images WHERE {where}", params)
        return np.fromiter((r[0] for r in cursor), np.int64)
