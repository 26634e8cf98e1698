"""Evaluation datasets read from disk: labelled images and captioned images.

:func:`load_classification` reads any classification dataset — ``folder``
(``root/<class>/*``), ``csv`` (``filepath,label`` tables, CSV/TSV/Parquet), ``mnist`` (IDX
files), ``archive`` (a tar of one of these, extracted to a cache directory),
``clip_benchmark`` (CLIP_benchmark's WebDataset layout) or ``procedural`` shapes — as image paths (or PIL images) with integer labels, class names and
prompt templates. :func:`load_captions` reads image-caption tables (several captions per
image) for retrieval. Nothing is downloaded.

Class names come from the dataset (folder names, the table's label strings), a built-in set
(:func:`builtin_classnames`: ``cifar10``, ``cifar100``, ``imagenet1k``, ``mnist``), a file
(one name per line, or a JSON list) or a list. Templates: a built-in set, a file, a list, or
a JSON file mapping each class name to its own prompts (CuPL-style).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..configs import ConfigError
from ..data.config import DataConfig
from ..templates import get_templates

__all__ = [
    "CLASSIFICATION_KINDS",
    "LabelledImages",
    "builtin_classnames",
    "data_config_for",
    "dataset_name",
    "guess_kind",
    "load_captions",
    "load_classification",
    "read_classnames",
    "resolve_classnames",
    "resolve_prompts",
    "subset_indices",
]

CLASSIFICATION_KINDS = ("folder", "csv", "mnist", "archive", "clip_benchmark", "procedural")
Prompts = list[str] | dict[str, list[str]]


@dataclass
class LabelledImages:
    """A classification dataset: ``images[i]`` (path or PIL image) has class ``labels[i]``."""

    images: list[Any]
    labels: np.ndarray
    classnames: list[str]
    templates: Prompts | None  # None: the caller's default
    failures: list[tuple[str, str]] = field(default_factory=list)  # unreadable, left out


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
            return builtin_classnames(name)
        if Path(name).is_file():
            text = Path(name).read_text("utf-8")
            stripped = text.lstrip()
            names = json.loads(text) if stripped.startswith("[") else text.splitlines()
            return [n.strip() for n in names if n.strip()]
        raise ConfigError(
            f"classnames {name!r}: not a built-in set {sorted(_builtin())} nor a file"
        )
    return [str(n) for n in spec]


def resolve_classnames(spec: str | Sequence[str] | None, default: list[str]) -> list[str]:
    """Class names from a built-in set name, a file (lines or JSON list), a list, or ``default``."""
    if spec is None:
        return default
    names = read_classnames(spec)
    if len(names) != len(default):
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


def subset_indices(n: int, limit: int | None) -> np.ndarray:
    """``limit`` evenly spaced indices of ``range(n)`` (all of them if ``limit`` is None)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def dataset_name(data: DataConfig | None) -> str:
    """A short name for result tables: the path's stem, or the kind."""
    if data is None or not data.path:
        return data.kind if data is not None else "builtin"
    name = Path(data.path.rstrip("/")).name
    for suffix in (".gz", ".bz2", ".xz", ".tar", ".tgz", ".csv", ".tsv", ".parquet"):
        name = name.removesuffix(suffix)
    return name


def _table_labels(data: DataConfig) -> tuple[list[str], list[str]]:
    from ..data.guards import confine_paths
    from ..data.tabular import read_columns, table_format

    opts = data.typed_options()
    fmt = table_format(data.path, opts.format)
    paths, labels = read_columns(
        data.path, [opts.image_column, opts.label_column], fmt, opts.separator, opts.quote_char
    )
    raw_paths, root = paths.to_pylist(), opts.root
    if opts.confine:  # before any path is resolved, read or reported
        confine_paths(raw_paths, root or ".", os.fspath(data.path))
    resolved = [os.path.join(root, p) if root and not os.path.isabs(p) else p for p in raw_paths]
    return resolved, [str(v).strip() for v in labels.to_pylist()]


def _csv_task(data: DataConfig, classnames: Any) -> LabelledImages:
    from ..data.guards import LabelError, parse_labels

    paths, raw = _table_labels(data)
    if raw and all(v.isdigit() for v in raw):
        names = None if classnames is None else read_classnames(classnames)
        labels = parse_labels(raw, None if names is None else len(names), data.path)
        if names is None:
            names = [str(i) for i in range(int(labels.max()) + 1)]
        return LabelledImages(paths, labels, names, None)
    names = sorted(set(raw)) if classnames is None else read_classnames(classnames)
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(raw) - set(index))
    if unknown:
        row = raw.index(unknown[0]) + 1
        raise LabelError(
            f"{data.path}: row {row}: label {unknown[0]!r} is not among the class names"
            + (f" ({len(unknown)} unknown labels)" if len(unknown) > 1 else "")
        )
    return LabelledImages(paths, np.asarray([index[v] for v in raw], np.int64), names, None)


def _clip_benchmark_task(data: DataConfig, classnames: Any, limit: int | None) -> LabelledImages:
    from ..data.clip_benchmark_wds import decode, read_shards
    from ..preprocess import ImageDecodeError

    root = Path(data.path)
    samples = read_shards(root, data.typed_options().split, limit)  # only kept samples read
    names = [n.strip() for n in (root / "classnames.txt").read_text("utf-8").splitlines()]
    template_file = root / "zeroshot_classification_templates.txt"
    templates = str(template_file) if template_file.is_file() else None
    names = resolve_classnames(classnames, [n for n in names if n])
    images, labels, failures = [], [], []
    for sample in samples:
        try:
            label = int(sample["cls"])
            if not 0 <= label < len(names):
                raise ValueError(f"label {label} is out of range for {len(names)} classes")
            images.append(decode(sample))
            labels.append(label)
        except (ImageDecodeError, KeyError, ValueError) as err:
            failures.append((f"{sample['__shard__']}:{sample['__key__']}", str(err)))
    return LabelledImages(images, np.asarray(labels, dtype=np.int64), names, templates, failures)


def _load(data: DataConfig, classnames: Any, n_per_class: int, limit: int | None) -> LabelledImages:
    if data.kind == "archive":
        from ..data.archive import inner_config

        return _load(inner_config(data), classnames, n_per_class, limit)
    if data.kind == "folder":
        from ..data.folder import class_names, scan_folder

        opts = data.typed_options()
        folders, samples = scan_folder(data.path)
        names = class_names(folders, opts.classnames)
        labels = np.asarray([y for _, y in samples], dtype=np.int64)
        return LabelledImages(
            [p for p, _ in samples], labels, resolve_classnames(classnames, names), opts.templates
        )
    if data.kind == "csv":
        return _csv_task(data, classnames)
    if data.kind == "mnist":
        from ..data.mnist import load_mnist, to_pil

        opts = data.typed_options()
        names = resolve_classnames(classnames, opts.classnames or [str(i) for i in range(10)])
        # limit applied from the headers: only the kept items are read
        images, labels = load_mnist(data.path, opts.split, limit, len(names))
        return LabelledImages([to_pil(i) for i in images], labels, names, opts.templates)
    if data.kind == "clip_benchmark":
        return _clip_benchmark_task(data, classnames, limit)
    if data.kind == "procedural":
        from ..data.procedural import render_zero_shot, zero_shot_task

        opts = data.typed_options()
        names, samples = zero_shot_task(opts.split, n_per_class)
        rendered = render_zero_shot(samples, data.image_size or 64, opts.seed or 0)
        return LabelledImages(
            [image for image, _ in rendered],
            np.asarray([y for _, y in rendered], dtype=np.int64),
            resolve_classnames(classnames, list(names)),
            None,
        )
    raise ConfigError(f"data kind {data.kind!r} is not a classification dataset")


def load_classification(
    data: DataConfig, classnames: Any = None, limit: int | None = None, n_per_class: int = 2
) -> LabelledImages:
    """The labelled images of ``data`` (``limit``: an evenly spaced subset)."""
    task = _load(data, classnames, n_per_class, limit)
    keep = subset_indices(len(task.images), limit)
    if len(keep) < len(task.images):
        task.images = [task.images[i] for i in keep]
        task.labels = task.labels[keep]
    return task


def load_captions(data: DataConfig, limit: int | None = None) -> tuple[list[str], list[list[str]]]:
    """Unique image paths (first-appearance order) and each one's captions."""
    from ..data import tabular

    if data.kind == "archive":
        from ..data.archive import inner_config

        data = inner_config(data)
    if data.kind != "csv":
        raise ConfigError(f"retrieval needs an image-caption table, not data kind {data.kind!r}")

    def identity(x: Any) -> Any:
        return x

    table = tabular.build(data, identity, identity, seed=0, rank=0, world_size=1)
    captions: dict[str, list[str]] = {}
    for row in range(len(table)):
        raw, caption = table.image_path(row), table.caption(row)
        if raw and caption and caption.strip():
            captions.setdefault(table.resolve(raw), []).append(caption)
    keep = subset_indices(len(captions), limit)
    paths = list(captions)
    return [paths[i] for i in keep], [captions[paths[i]] for i in keep]


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
