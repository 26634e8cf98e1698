"""Guard a training output directory: one run at a time, and no silent overwrites.

``claim_output_dir`` takes an exclusive ``fcntl`` lock on ``output_dir/.clipforge.lock``
for the whole run, so a second run in the same directory is refused instead of deleting
the first one's temporary checkpoint or interleaving its ``metrics.jsonl``. A directory
that already holds files is refused unless the run resumes (``resume=...``) or the caller
asks to overwrite, in which case the previous run's files are removed first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError

__all__ = ["LOCK_FILE", "OutputDirError", "claim_output_dir"]

LOCK_FILE = ".clipforge.lock"
# What a training run writes (and ``overwrite`` removes); anything else is left alone.
_RUN_FILES = {"latest", "metrics.jsonl", "train_config.json", "tensorboard"}
_RUN_DIRS = re.compile(r"^(step_\d+|\.tmp_step_\d+_\d+)$")


class OutputDirError(UsageError, RuntimeError):
    """The output directory is in use by another run, or holds a previous run's files."""


def _run_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name in _RUN_FILES or _RUN_DIRS.match(p.name))


def _remove_previous_run(root: Path) -> None:
    for path in _run_files(root):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _lock(root: Path) -> int:
    """An open descriptor holding the exclusive lock; raises if another run holds it."""
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise OutputDirError(
            f"output_dir {root} is in use by another training run (pid {holder}, lock "
            f"{path}); wait for it to finish or choose another output_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _check_empty(root: Path, resume: str | None, overwrite: bool) -> None:
    if resume is not None:
        return
    if overwrite:
        _remove_previous_run(root)
        return
    entries = sorted(p.name for p in root.iterdir() if p.name != LOCK_FILE)
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputDirError(
            f"output_dir {root} is not empty ({shown}); pass resume=latest to continue that "
            "run, --overwrite to replace it, or choose another output_dir"
        )


@contextlib.contextmanager
def claim_output_dir(
    output_dir: str | Path, resume: str | None, overwrite: bool = False, main: bool = True
) -> Iterator[Path]:
    """Lock ``output_dir`` for one run and check it may be written (only on the main rank).

    Raises :class:`OutputDirError` when another run holds the lock, or when the directory
    is not empty, ``resume`` is ``None`` and ``overwrite`` is false. With ``overwrite`` the
    previous run's checkpoints, ``latest``, logs and TensorBoard files are removed.
    """
    root = Path(output_dir)
    if not main:
        yield root
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = _lock(root)
    try:
        _check_empty(root, resume, overwrite)
        yield root
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
