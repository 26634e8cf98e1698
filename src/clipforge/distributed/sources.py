"""What a distributed embedding run reads: ``(id, path)`` items from a folder or a list."""

from __future__ import annotations

import os
from pathlib import Path

from ..data.folder import list_images

__all__ = ["list_source"]

_LIST_SUFFIXES = (".csv", ".parquet")


def list_source(
    source: str | os.PathLike, path_column: str = "path", id_column: str | None = "id"
) -> list[tuple[str, str]]:
    """``(id, path)`` of every image of ``source``, in a stable order.

    A directory is scanned recursively for image files (sorted; the id is the path relative
    to the directory). A ``.csv`` or ``.parquet`` file lists the images in ``path_column``
    (relative paths are taken from the list's folder), with ids from ``id_column`` when it
    exists, else the path as written.
    """
    root = Path(source)
    if root.is_dir():

        return [(os.path.relpath(p, root), p) for p in list_images(root)]
    if root.suffix.lower() not in _LIST_SUFFIXES:
        raise ValueError(f"{root}: expected an image folder, a .csv or a .parquet list")
    import pandas as pd

    table = pd.read_csv(root) if root.suffix.lower() == ".csv" else pd.read_parquet(root)
    if path_column not in table.columns:
        raise ValueError(f"{root}: no {path_column!r} column (columns: {list(table.columns)})")
    paths = [str(p) for p in table[path_column]]
    ids = [str(i) for i in table[id_column]] if id_column in table.columns else list(paths)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{root}: ids are not unique")
    return [(i, str(root.parent / p)) for i, p in zip(ids, paths, strict=True)]
