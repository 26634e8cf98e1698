"""Evaluation datasets read from disk: labelled images and captioned images.

:func:`load_classification` reads any registered data source that yields labelled images
(:class:`~clipforge.data.sources.DataSource`; built in: ``folder`` (``root/<class>/*``),
``csv`` (``filepath,label`` tables, CSV/TSV/Parquet), ``mnist`` (IDX files), ``archive`` (a
tar of one of these, extracted to a cache directory), ``clip_benchmark`` (CLIP_benchmark's
WebDataset layout) and ``procedural`` shapes) as image paths (or PIL images) with integer
labels, class names and prompt templates. :func:`load_captions` reads any source that
yields captions (image-caption tables, several captions per image) for retrieval. Nothing
is downloaded.

Class names come from the dataset (folder names, the table's label strings), a built-in set
(:func:`builtin_classnames`: ``cifar10``, ``cifar100``, ``imagenet1k``, ``mnist``), a file
(one name per line, or a JSON list) or a list. Templates: a built-in set, a file, a list, or
a JSON file mapping each class name to its own prompts (CuPL-style).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..configs import ConfigError
from ..data.data_config import DataConfig
from ..data.guards import LabelError
from ..data.samples import CaptionedImages, LabelledImages, Prompts, subset_indices
from ..data.sources import get_data_source
from ..templates import get_templates

__all__ = [
    "LabelledImages",
    "apply_classnames",
    "builtin_classnames",
    "data_config_for",
    "dataset_name",
    "guess_kind",
    "load_captioned",
    "load_captions",
    "load_classification",
    "read_classnames",
    "resolve_classnames",
    "resolve_prompts",
    "subset_indices",
]



@cache
def _builtin() -> dict[str, list[str]]:
    text = resources.files("clipforge.eval").joinpath("classnames.json").read_text("utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def builtin_classnames(name: str | None = None) -> list[str] | list[list[str]]:
    """The built-in class-name set ``name``; without a name, the set names."""
    sets = _builtin()
    if name is None:
        return sorted(sets)
    if name not in sets:
        raise ConfigError(f"unknown class-name set {name!r}; built in: {sorted(sets)}")
    return list(sets[name])


def read_classnames(spec: str | os.PathLike | Sequence[str]) -> list[str]:
    """Class names from a built-in set name, a file (lines or JSON list) or a list."""
    if isinstance(spec, str | os.PathLike):
        name = os.fspath(spec)
        if name in _builtin():
            return list(builtin_classnames(name))  # type: ignore[arg-type]
        if Path(name).is_file():
            text = Path(name).read_text("utf-8")
            names = json.loads(text) if text.lstrip().startswith("[") else text.splitlines()
            return [str(n).strip() for n in names if str(n).strip()]
        raise ConfigError(f"classnames {name!r}: not a built-in set {sorted(_builtin())} nor a file")
    return [str(n) for n in spec]


def resolve_classnames(
    spec: str | Sequence[str] | None, default: list[str] | None
) -> list[str]:
    """Class names from a built-in set name, a file (lines or JSON list), a list, or
    ``default``; with a ``default``, the number of names must match it."""
    if spec is None:
        return list(default or [])
    names = read_classnames(spec)
    if default is not None and len(names) != len(default):
        raise ConfigError(f"{len(names)} class names given for {len(default)} classes")
    return names


def resolve_prompts(spec: Any, classnames: list[str]) -> Prompts:
    """Templates (a set name, file, list) or a JSON file of per-class prompts (CuPL)."""
    if isinstance(spec, dict) or (
        isinstance(spec, str) and spec.endswith(".json") and Path(spec).is_file()
    ):
        table = spec if isinstance(spec, dict) else json.loads(Path(spec).read_text("utf-8"))
        if isinstance(table, list):
            return get_templates(table)
        missing = [c for c in classnames if not table.get(c)]
        if missing:
            raise ConfigError(f"per-class prompts: no prompts for {missing[:5]}")
        return {c: list(table[c]) for c in classnames}
    return get_templates(spec)


def dataset_name(data: DataConfig | None) -> str:
    """A short name for result tables: the path's stem, or the kind."""
    if data is None or not data.path:
        return data.kind if data is not None else "builtin"
    name = Path(data.path.rstrip("/")).name
    for suffix in (".gz", ".bz2", ".xz", ".tar", ".tgz", ".csv", ".tsv", ".parquet"):
        name = name.removesuffix(suffix)
    return name


def load_classification(
    data: DataConfig, classnames: Any = None, limit: int | None = None, n_per_class: int = 2
) -> LabelledImages:
    """The labelled images of ``data`` — any registered data source that yields labelled
    images — with ``classnames`` (a set name, file or list) applied, and ``limit`` (an
    evenly spaced subset)."""
    names = None if classnames is None else read_classnames(classnames)
    source = get_data_source(data.kind)
    task = source.read_labelled(
        data, limit=limit, n_per_class=n_per_class, n_classes=None if names is None else len(names)
    )
    task = apply_classnames(task, names, os.fspath(data.path or data.kind))
    keep = subset_indices(len(task.images), limit)
    if len(keep) < len(task.images):
        task.images = [task.images[i] for i in keep]
        task.labels = task.labels[keep]
    return task


def apply_classnames(task: LabelledImages, names: list[str] | None, source: str) -> LabelledImages:
    """``task`` with the class ``names`` given (``None``: unchanged). Labels that came from
    names are matched by name (each must be among ``names``, whose order gives the class
    indices); integer labels by position (as many names as the dataset's classes, or, where
    the classes were only inferred from the labels, at least one more than the largest)."""
    if names is None:
        return task
    if task.named_labels:
        index = {name: i for i, name in enumerate(names)}
        known = np.asarray([name in index for name in task.classnames], dtype=bool)
        if not known.all():
            row = int(np.flatnonzero(~known[task.labels])[0]) + 1
            label = task.classnames[int(task.labels[row - 1])]
            unknown = int((~known).sum())
            more = f" ({unknown} unknown labels)" if unknown > 1 else ""
            raise LabelError(f"{source}: row {row}: label {label!r} is not among the class names{more}")
        remap = np.asarray([index[name] for name in task.classnames], dtype=np.int64)
        task.labels, task.classnames = remap[task.labels], names
        return task
    if task.exact_classes and len(names) != len(task.classnames):
        raise ConfigError(f"{len(names)} class names given for {len(task.classnames)} classes")
    if len(task.labels) and int(task.labels.max()) >= len(names):
        raise LabelError(
            f"{source}: label {int(task.labels.max())} is out of range for {len(names)} classes"
        )
    task.classnames = names
    return task


def load_captions(data: DataConfig, limit: int | None = None) -> tuple[list[str], list[list[str]]]:
    """Unique image paths (first-appearance order) and each one's captions, from any
    registered data source that yields captions."""
    pairs = load_captioned(data, limit)
    return pairs.images, pairs.captions


def load_captioned(data: DataConfig, limit: int | None = None) -> CaptionedImages:
    """:func:`load_captions` with each caption's language where the source has one."""
    return get_data_source(data.kind).read_captions(data, limit=limit)


_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def guess_kind(path: str | os.PathLike) -> str:
    """The data kind of ``path``: ``archive`` (tar), ``csv`` (table), ``clip_benchmark``
    (a directory with ``classnames.txt``), ``mnist`` (a directory of IDX files) or ``folder``."""
    name = os.fspath(path).lower()
    if name.endswith(_ARCHIVE_SUFFIXES):
        return "archive"
    if name.endswith((".csv", ".tsv", ".tab", ".parquet", ".pq", ".csv.gz", ".tsv.gz")):
        return "csv"
    if (Path(path) / "classnames.txt").is_file():
        return "clip_benchmark"
    if Path(path).is_dir() and any(p.name.endswith(("-idx3-ubyte", "-idx3-ubyte.gz"))
                                   for p in Path(path).iterdir()):  # fmt: skip
        return "mnist"
    return "folder"


def data_config_for(
    path: str | os.PathLike, kind: str | None = None, options: dict[str, Any] | None = None,
    num_workers: int = 0,
) -> DataConfig:  # fmt: skip
    """A :class:`DataConfig` for ``path``, its kind guessed (:func:`guess_kind`) if not given."""
    return DataConfig(
        kind=kind or guess_kind(path),
        path=os.fspath(path),
        options=dict(options or {}),
        num_workers=num_workers,
    )
