"""Writer lock and typed errors of an index directory.

Every writer of an index (``Index.add`` / ``sync`` / ``remove`` / ``rebuild``, whether
called by the CLI, the service or a script) holds an advisory ``fcntl.flock`` on
``DIR/.writer.lock``; the holder's PID is written into it for the error message. The
kernel drops the lock when the process dies, so a ``kill -9`` never leaves it stuck.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError

LOCK_NAME = ".writer.lock"


class IndexLockedError(InputError):
    """Another process is writing the index."""

    http_status = 409


class IndexNotFoundError(InputError):
    """A read command was pointed at a directory that holds no index."""

    http_status = 404


class IndexCorruptError(InputError):
    """``metadata.sqlite`` is damaged (the vector file is rebuilt instead, see reconcile)."""

    http_status = 503


class IndexWriteError(InputError):
    """Writing the index failed (disk full, read-only file system...)."""

    http_status = 507


class RootNotFoundError(InputError):
    """A folder given to ``sync`` is missing (unmounted?): nothing is removed."""

    http_status = 422


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


@contextmanager
def writer_lock(directory: Path, timeout: float | None = 0.0) -> Iterator[None]:
    """Hold the index's writer lock; ``timeout``: seconds to wait (``None``: forever)."""
    path = Path(directory) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise IndexLockedError(
                        f"index {directory} is being written by PID {_holder(path)}; "
                        "try again when it ends (or pass --wait)"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def write_errors(directory: Path) -> Iterator[None]:
    """Turn disk-full / read-only failures while writing into one typed line."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "full" in text or "readonly" in text or "disk I/O" in text:
            raise IndexWriteError(f"index {directory}: cannot write: {text}") from exc
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
            raise IndexWriteError(
                f"index {directory}: cannot write: {os.strerror(exc.errno)}"
            ) from exc
        raise
