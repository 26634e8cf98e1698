"""Resolve a training run directory, or its ``latest`` pointer file, to a model directory.

``clipforge train`` and the demo write ``OUTPUT/step_N/`` (a ``clipforge`` format directory
plus training state) and ``OUTPUT/latest``, a text file naming the newest step directory
(see :mod:`clipforge.train.checkpoint`). So ``clipforge.load("runs/demo")`` and
``clipforge.load("runs/demo/latest")`` mean the newest intact step: the one ``latest``
names, or else the newest ``step_N`` whose config and weights are readable.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from safetensors import safe_open

from .errors import CheckpointError

LATEST = "latest"
STEP_DIR = re.compile(r"^step_(\d+)$")
_MODEL_FILES = ("clipforge_config.json", "model.safetensors")
_POINTER_MAX_BYTES = 4096
_log = logging.getLogger("clipforge.checkpoints")


def is_run_pointer(path: Path) -> bool:
    """True for a small text file named ``latest`` (a run's pointer)."""
    return path.name == LATEST and path.is_file() and path.stat().st_size <= _POINTER_MAX_BYTES


def is_run_directory(path: Path) -> bool:
    """True for a directory holding a ``latest`` pointer or ``step_N`` subdirectories."""
    if not path.is_dir():
        return False
    return is_run_pointer(path / LATEST) or any(
        STEP_DIR.match(p.name) and p.is_dir() for p in path.iterdir()
    )


def _intact(step_dir: Path) -> str | None:
    """``None`` if ``step_dir`` holds a readable model, else why not."""

    missing = [f for f in _MODEL_FILES if not (step_dir / f).is_file()]
    if missing:
        return f"{step_dir}: no {', '.join(missing)}"
    try:
        with safe_open(str(step_dir / _MODEL_FILES[1]), "pt"):  # header and length only
            pass
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...
        return f"{step_dir / _MODEL_FILES[1]} is damaged: {err}"
    return None


def _pointer_target(pointer: Path) -> Path | None:
    """The step directory ``pointer`` names, refusing one outside the run directory."""
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{pointer}: unreadable run pointer: {err}") from err
    root = pointer.parent
    if not name:
        return None
    target = root / name
    if not STEP_DIR.match(target.name) or target.resolve().parent != root.resolve():
        raise CheckpointError(
            f"{pointer} names {name!r}, which is not a step directory inside {root}; "
            "refusing to follow it"
        )
    return target


def resolve_run(path: str | Path) -> Path:
    """The newest intact ``step_N`` directory of a run directory or its ``latest`` file.

    A damaged newest step is skipped with a warning; :class:`CheckpointError` naming
    ``path`` when none is intact.
    """
    path = Path(path)
    root = path.parent if is_run_pointer(path) else path
    pointer = root / LATEST
    first = _pointer_target(pointer) if is_run_pointer(pointer) else None
    steps = sorted(
        (int(m[1]), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()
    )
    candidates = [first] if first is not None else []
    candidates += [p for _, p in reversed(steps) if p != first]
    problems = []
    for candidate in candidates:
        problem = _intact(candidate) if candidate.is_dir() else f"{candidate}: missing"
        if problem is None:
            if problems:
                _log.warning("skipping damaged checkpoints (%s); using %s", problems, candidate)
            return candidate
        problems.append(problem)
    detail = "; ".join(problems) or "no step_N directory"
    raise CheckpointError(f"{path}: training run without an intact model checkpoint ({detail})")
