"""Output paths of the CLI, checked before any work (writing is ``clipforge.embedding_io``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..embedding_io import EMBEDDING_SUFFIXES
from .errors import UsageError


def check_writable(path: Path, option: str) -> None:
    """Create ``path``'s directory and prove a file can be written there, or raise."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".clipforge-probe-"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise UsageError(f"{option} {path}: cannot write to {parent}: {reason}") from None
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory; give a file name")


def check_embedding_output(output: Path) -> None:
    """Validate ``--output`` (suffix, writer installed, directory writable) before embedding."""
    if output.suffix not in EMBEDDING_SUFFIXES:
        raise UsageError(f"--output {output}: must end in .npy or .parquet")
    if output.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise UsageError(
                f"--output {output}: writing .parquet needs pyarrow (pip install pyarrow), "
                "or write .npy instead"
            ) from None
    check_writable(output, "--output")
