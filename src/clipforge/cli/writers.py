"""Output files of the CLI: checked before any work, written atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    import numpy as np

EMBEDDING_SUFFIXES = (".npy", ".parquet")


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


def ids_path(output: Path) -> Path:
    """The text file of ids written beside an ``.npy`` output."""
    return output.with_suffix(".ids.txt")


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it if the block succeeds."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_embeddings(output: Path, ids: list[str], vectors: np.ndarray) -> list[Path]:
    """Write ``vectors`` with their ``ids`` (``.npy`` + ``.ids.txt``, or ``.parquet``).

    Each file is written under a temporary name and renamed into place; returns the paths.
    """
    import numpy as np

    if output.suffix == ".npy":
        with _atomic(output) as tmp_vectors, _atomic(ids_path(output)) as tmp_ids:
            with open(tmp_vectors, "wb") as f:
                np.save(f, vectors)
            tmp_ids.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        return [output, ids_path(output)]
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1]
    )
    table = pa.table({"id": pa.array(ids, type=pa.string()), "embedding": column})
    with _atomic(output) as tmp:
        pq.write_table(table, tmp)
    return [output]
