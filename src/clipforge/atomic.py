"""Atomic file writes: a uniquely named temporary sibling, synced, then renamed into place.

Every file clipforge writes for users (checkpoints, embeddings, index files, manifests) goes
through here, so a crash leaves either the old file or the new one, never a torn one, and two
processes writing the same file never share a temporary name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_atomic", "write_text_atomic"]


@contextmanager
def atomic_path(path: Path, *, sync: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block succeeds.

    The name carries the process id and a random suffix (two writers never collide); with
    ``sync`` the file is fsynced before the rename. On failure the temporary file is removed.
    """
    # Not mkstemp: its 0600 mode would survive the rename; this file gets the usual umask.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if sync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], object], *, sync: bool = True) -> None:
    """Write ``path`` by calling ``write(tmp)`` on a temporary sibling, then renaming it."""
    with atomic_path(path, sync=sync) as tmp:
        write(tmp)


def write_text_atomic(path: Path, text: str, *, sync: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), sync=sync)
