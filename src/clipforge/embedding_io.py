"""Embedding files: ``.npy`` + ``.ids.txt`` or ``.parquet`` (``id``, ``embedding``), written
atomically (a temporary name renamed into place), so an interrupted run never leaves a
half-written file or vectors without their ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import UsageError

__all__ = ["EMBEDDING_SUFFIXES", "ids_path", "write_embeddings"]

EMBEDDING_SUFFIXES = (".npy", ".parquet")


def ids_path(output: Path) -> Path:
    """The text file of ids written beside an ``.npy`` output."""
    return output.with_suffix(".ids.txt")


def write_embeddings(output: Path, ids: list[str], vectors: np.ndarray) -> list[Path]:
    """Write ``vectors`` with their ``ids`` (``.npy`` + ``.ids.txt``, or ``.parquet``).

    Each file is written under a temporary name and renamed into place; returns the paths.
    """
    if output.suffix not in EMBEDDING_SUFFIXES:
        raise UsageError(f"{output}: embedding files end in .npy or .parquet")
    if output.suffix == ".npy":
        with atomic_path(output) as tmp_vectors, atomic_path(ids_path(output)) as tmp_ids:
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
    with atomic_path(output) as tmp:
        pq.write_table(table, tmp)
    return [output]
