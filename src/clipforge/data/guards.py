"""Checks that evaluation readers run on hostile input before reading or allocating.

* :func:`confine_paths`: every image path of a table stays under the dataset root;
* :func:`parse_labels`: integer labels of a table, range-checked against the class count
  before any per-class array is built;
* :func:`check_labels`: IDX labels (non-negative, below the class count).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import InputError

__all__ = [
    "MAX_CLASSES",
    "DatasetPathError",
    "LabelError",
    "check_labels",
    "confine_paths",
    "parse_labels",
]

MAX_CLASSES = 100_000  # class count implied by integer labels when no class names are given


class DatasetPathError(InputError):
    """A dataset row names an image outside the dataset root."""


class LabelError(InputError):
    """A label that is negative, not an integer, or beyond the class count."""


def confine_paths(paths: Sequence[str | None], root: str | os.PathLike, source: str) -> None:
    """Raise :class:`DatasetPathError` naming the first row (1-based) whose path escapes
    ``root``: absolute paths, ``..`` paths and links leading outside it."""
    base = os.path.realpath(root)
    for row, path in enumerate(paths, start=1):
        if not path:
            continue
        resolved = os.path.realpath(os.path.join(base, path))
        if os.path.isabs(path) or os.path.commonpath([base, resolved]) != base:
            raise DatasetPathError(f"{source}: row {row}: path {path} escapes the dataset root")


def parse_labels(raw: Sequence[str], n_classes: int | None, source: str) -> np.ndarray:
    """Decimal labels as int64, each checked against ``n_classes`` (or :data:`MAX_CLASSES`
    when the class count is not known) before anything of that size is allocated."""
    limit = n_classes if n_classes is not None else MAX_CLASSES
    values = np.empty(len(raw), dtype=np.int64)
    for row, text in enumerate(raw, start=1):
        value = int(text)
        if value >= limit:
            hint = "" if n_classes is not None else "; give --classnames to allow more"
            raise LabelError(
                f"{source}: row {row}: label {value} is out of range for {limit} classes{hint}"
            )
        values[row - 1] = value
    return values


def check_labels(labels: np.ndarray, n_classes: int | None, source: str) -> np.ndarray:
    """IDX labels as int64: refuse a non-integer dtype, a negative label (a signed dtype's
    ``-1`` would otherwise select the last class) or one ``>= n_classes``."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise LabelError(f"{source}: labels must be a 1-D integer array, got {labels.dtype}")
    if labels.size and int(labels.min()) < 0:
        item = int(np.argmin(labels))
        raise LabelError(f"{source}: item {item}: label {int(labels[item])} is negative")
    if n_classes is not None and labels.size and int(labels.max()) >= n_classes:
        item = int(np.argmax(labels))
        raise LabelError(
            f"{source}: item {item}: label {int(labels[item])} is out of range "
            f"for {n_classes} classes"
        )
    return labels.astype(np.int64)
