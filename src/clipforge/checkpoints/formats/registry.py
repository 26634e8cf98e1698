"""The checkpoint format registry and detection (no format module is imported here, so
format modules can use detection themselves; ``formats/__init__.py`` registers the
built-in ones)."""

from __future__ import annotations

from pathlib import Path

from ...registry import Registry
from ..errors import CheckpointError, UnknownFormatError
from ..reader import read_state_dict
from ..runs import is_run_directory, is_run_pointer, resolve_run
from .base import CheckpointFormat, LoadedCheckpoint, StateDict

#: format name -> its :class:`CheckpointFormat`
FORMATS: Registry[CheckpointFormat] = Registry("checkpoint format", error=UnknownFormatError)


def register_format(fmt: CheckpointFormat, replace: bool = False) -> CheckpointFormat:
    """Add ``fmt`` to the registry (``replace=True`` to override a format of the same name)."""
    return FORMATS.register(fmt.name, fmt, replace=replace)


def list_formats(savable: bool = False) -> list[str]:
    """Registered format names (``savable=True``: only those ``save`` can write)."""
    return sorted(n for n, f in FORMATS.items() if not savable or f.write_dir is not None)


def get_format(name: str) -> CheckpointFormat:
    """The registered format called ``name``; :class:`UnknownFormatError` with a hint if none."""
    return FORMATS.get(name)


def _by_priority() -> list[CheckpointFormat]:
    return sorted(FORMATS.values(), key=lambda f: -f.priority)  # stable: registration order


def detect_state_format(state: StateDict) -> CheckpointFormat | None:
    """The format whose key layout ``state`` has, or ``None``."""
    for fmt in _by_priority():
        if fmt.matches is not None and fmt.matches(state):
            return fmt
    return None


def detect_directory_format(directory: str | Path) -> CheckpointFormat | None:
    """The format whose marker config file ``directory`` contains, or ``None``."""
    directory = Path(directory)
    for fmt in _by_priority():
        marker = fmt.marker_file
        if fmt.read_dir is not None and marker is not None and (directory / marker).is_file():
            return fmt
    return None


def to_native_state(state: StateDict, source: str) -> StateDict:
    """Detect the key layout of a state dict and translate it to clipforge's."""
    fmt = detect_state_format(state)
    if fmt is None:
        sample = ", ".join(list(state)[:5])
        raise CheckpointError(f"{source}: unrecognised checkpoint layout (first keys: {sample})")
    return fmt.to_native(state)


def read_directory(directory: str | Path, trust_pickle: bool = False) -> LoadedCheckpoint:
    """Read a hub-layout directory of any registered format."""
    directory = Path(directory)
    fmt = detect_directory_format(directory)
    if fmt is None or fmt.read_dir is None:
        markers = ", ".join(f.marker_file for f in _by_priority() if f.marker_file and f.read_dir)
        raise CheckpointError(f"{directory}: not a checkpoint directory (none of {markers} found)")
    return fmt.read_dir(directory, trust_pickle)


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> LoadedCheckpoint:
    """A file or directory checkpoint, translated to clipforge's layout.

    A training run directory, or its ``latest`` pointer file, reads the newest intact
    ``step_N`` directory (:func:`clipforge.checkpoints.runs.resolve_run`).
    """
    path = Path(path)
    if is_run_pointer(path) or (
        path.is_dir() and detect_directory_format(path) is None and is_run_directory(path)
    ):
        path = resolve_run(path)
    if path.is_dir():
        return read_directory(path, trust_pickle)
    state = read_state_dict(path, trust_pickle)
    return LoadedCheckpoint(to_native_state(state, str(path)), None, None, str(path))
