"""Image-caption tables (CSV, TSV, Parquet) as a map-style training data source.

``build(ctx)`` reads ``cfg.path`` (a ``.csv``/``.tsv``/``.tab`` file, optionally
compressed: ``.gz``, ``.bz2``, ``.zst``, ``.lz4``; or a ``.parquet``/``.pq`` file or
directory of Parquet files) with pyarrow and returns an :class:`ImageCaptionTable`.

``cfg.options`` (:class:`Options`):

* ``image_column`` (``"filepath"``) and ``caption_column`` (``"caption"``); for
  classification (evaluation), ``label_column`` (``"label"``: a class name or index);
* ``root``: directory that relative image paths are relative to (default: as written,
  i.e. relative to the working directory, as open_clip's CSV datasets);
* ``format``: ``"csv"``, ``"tsv"`` or ``"parquet"`` (default: from the extension);
* ``separator``: the CSV delimiter (default ``","``, ``"\\t"`` for ``.tsv``/``.tab``);
* ``quote_char``: CSV quote character (default ``'"'``; ``None`` disables quoting);
* ``draft``: decode JPEGs at reduced size, >= ``cfg.image_size`` (lossy, faster);
* ``confine``: refuse the table (``DatasetPathError``) if a row's image path is absolute or
  leads outside ``root`` (set for tables inside archives).

Items are ``(image, tokens)``: a ``(3, H, W)`` tensor from ``transform`` and a ``(L,)``
LongTensor from ``tokenize``; or ``None`` for a bad sample (missing/corrupt image, empty
caption), which is logged once (by row and path) on the ``clipforge.data`` logger and
counted in ``dataset.skipped`` (per worker process). Sharding across ranks is left to the
sampler (``DistributedSampler``), so ``rank`` and ``world_size`` are not used here.

The columns are kept as Arrow arrays, not Python objects, so ``DataLoader`` workers share
them without copy-on-access growth.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..configs import ConfigError
from ..preprocess import ImageDecodeError, load_image
from .guards import confine_paths, parse_labels
from .samples import CaptionedImages, LabelledImages, subset_indices
from .sources import BuildContext, source_options

logger = logging.getLogger("clipforge.data")

Sample = tuple[torch.Tensor, torch.Tensor] | None
Transform = Callable[[Any], torch.Tensor]
Tokenize = Callable[[str], torch.Tensor]

_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Options:
    """``data.options`` of the ``csv`` kind (CSV, TSV or Parquet tables)."""

    image_column: str = "filepath"
    caption_column: str = "caption"
    label_column: str = "label"  # classification tables (evaluation): class name or index
    language_column: str = "language"  # retrieval tables: per-language metrics when present
    root: str | None = None  # relative image paths are relative to this directory
    format: str | None = None  # "csv" | "tsv" | "parquet"; None: from the extension
    separator: str | None = None  # CSV delimiter; None: "," ("\\t" for .tsv/.tab)
    quote_char: str | None = '"'  # None: no quoting
    draft: bool = False  # decode JPEGs at reduced size (>= data.image_size)
    confine: bool = False  # refuse rows whose image path escapes ``root`` (archives set it)

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in ("csv", "tsv", "parquet"):
            raise ConfigError(
                f"data.options.format: unknown table format {self.format!r}; "
                "use csv, tsv or parquet"
            )


class BadSampleLog:
    """Counts bad samples and logs each sample id once (per process)."""

    def __init__(self) -> None:
        self.skipped = 0
        self._logged: set[str] = set()

    def skip(self, sample_id: str, reason: str) -> None:
        self.skipped += 1
        if sample_id not in self._logged:
            self._logged.add(sample_id)
            logger.warning("skipping bad sample %s: %s", sample_id, reason)


def caption_problem(caption: Any) -> str | None:
    """Why a caption is unusable (``None`` if it is fine)."""
    if caption is None:
        return "missing caption"
    if not isinstance(caption, str):
        return f"caption is not text ({type(caption).__name__})"
    if not caption.strip():
        return "empty caption"
    return None


def to_tokens(tokenize: Tokenize, caption: str) -> torch.Tensor:
    """``tokenize(caption)`` as a 1-D LongTensor (a ``(1, L)`` result is squeezed)."""
    tokens = torch.as_tensor(tokenize(caption))
    if tokens.ndim == 2 and tokens.shape[0] == 1:
        tokens = tokens[0]
    if tokens.ndim != 1:
        raise ValueError(
            f"tokenize must return (L,) or (1, L) token ids, got shape {tuple(tokens.shape)}"
        )
    return tokens.long()


class ImageCaptionDataset(Dataset):
    """Map-style base: subclasses provide ``__len__``, ``image_path(i)`` and ``caption(i)``."""

    def __init__(
        self,
        transform: Transform,
        tokenize: Tokenize,
        root: str | os.PathLike | None = None,
        min_size: int | None = None,
    ) -> None:
        self.transform = transform
        self.tokenize = tokenize
        self.root = None if root is None else os.fspath(root)
        self.min_size = min_size
        self._log = BadSampleLog()

    @property
    def skipped(self) -> int:
        """Bad samples met so far by this process (each DataLoader worker counts its own)."""
        return self._log.skipped

    def image_path(self, index: int) -> str | None:
        raise NotImplementedError

    def caption(self, index: int) -> str | None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError  # subclasses know their row count

    def sample_id(self, index: int, path: str | None) -> str:
        return f"{index} ({path!r})"

    def resolve(self, path: str) -> str:
        if self.root is not None and not os.path.isabs(path):
            return os.path.join(self.root, path)
        return path

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        raw = self.image_path(index)
        path = self.resolve(raw) if raw else None
        sid = self.sample_id(index, path)
        caption = self.caption(index)
        problem = caption_problem(caption) or (None if path else "missing image path")
        if problem is not None or path is None or caption is None:
            self._log.skip(sid, problem or "missing image path")
            return None
        try:
            image = self.transform(load_image(path, min_size=self.min_size))
            tokens = to_tokens(self.tokenize, caption)
        except (ImageDecodeError, OSError) as exc:  # OSError: PIL errors in lazy operations
            self._log.skip(sid, getattr(exc, "reason", None) or str(exc))
            return None
        return image, tokens


class ImageCaptionTable(ImageCaptionDataset):
    """Rows of (image path, caption) held as Arrow arrays."""

    def __init__(
        self,
        paths: Any,
        captions: Any,
        transform: Transform,
        tokenize: Tokenize,
        root: str | os.PathLike | None = None,
        min_size: int | None = None,
        source: str = "",
    ) -> None:
        super().__init__(transform, tokenize, root, min_size)
        if len(paths) != len(captions):
            raise ValueError(f"{len(paths)} image paths but {len(captions)} captions")
        self.paths = paths
        self.captions = captions
        self.source = source

    def __len__(self) -> int:
        return len(self.paths)

    def image_path(self, index: int) -> str | None:
        return self.paths[index].as_py()

    def caption(self, index: int) -> str | None:
        return self.captions[index].as_py()

    def sample_id(self, index: int, path: str | None) -> str:
        return f"row {index} ({path!r})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, {len(self)} rows)"


def table_format(path: str | os.PathLike, explicit: str | None = None) -> str:
    """``"csv"``, ``"tsv"`` or ``"parquet"``, from ``explicit`` or the file extension."""
    if explicit is not None:
        if explicit not in ("csv", "tsv", "parquet"):
            raise ValueError(f"unknown table format {explicit!r}; use csv, tsv or parquet")
        return explicit
    name = Path(path).name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    fmt = _FORMATS.get(Path(name).suffix)
    if fmt is None:
        if Path(path).is_dir():
            return "parquet"
        raise ValueError(
            f"cannot tell the table format of {os.fspath(path)!r} from its extension; "
            f"expected one of {sorted(_FORMATS)} or options['format']"
        )
    return fmt


def read_columns(
    path: str | os.PathLike,
    columns: list[str],
    fmt: str,
    separator: str | None = None,
    quote_char: str | None = '"',
) -> list[Any]:
    """The named columns of a table as Arrow ``large_string`` arrays (nulls kept)."""
    import pyarrow as pa

    path = os.fspath(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        available = pq.read_schema(path).names if os.path.isfile(path) else None
        if available is not None:
            _check_columns(path, columns, available)
        table = pq.read_table(path, columns=columns)
    else:
        import pyarrow.csv as pacsv

        delimiter = separator or ("\t" if fmt == "tsv" else ",")
        parse = pacsv.ParseOptions(
            delimiter=delimiter,
            quote_char=quote_char if quote_char else False,
            newlines_in_values=True,
        )
        with pacsv.open_csv(path, parse_options=parse) as reader:
            _check_columns(path, columns, reader.schema.names)
        convert = pacsv.ConvertOptions(
            include_columns=columns,
            column_types=dict.fromkeys(columns, pa.large_string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        table = pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    return [table.column(c).cast(pa.large_string()).combine_chunks() for c in columns]


def column_names(
    path: str | os.PathLike, fmt: str, separator: str | None = None, quote_char: str | None = '"'
) -> list[str]:
    """The column names of a table (its header or schema)."""
    path = os.fspath(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import pyarrow.csv as pacsv

    delimiter = separator or ("\t" if fmt == "tsv" else ",")
    parse = pacsv.ParseOptions(
        delimiter=delimiter, quote_char=quote_char if quote_char else False,
        newlines_in_values=True,
    )  # fmt: skip
    with pacsv.open_csv(path, parse_options=parse) as reader:
        return list(reader.schema.names)


def _check_columns(path: str, wanted: list[str], available: list[str]) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; the table has {available}")


def build(ctx: BuildContext) -> ImageCaptionTable:
    """An :class:`ImageCaptionTable` for ``cfg.path`` (see the module docstring for options)."""
    cfg = ctx.cfg  # map-style: ordering and sharding belong to the sampler
    opts: Options = source_options(cfg, "csv", what="tabular data options")
    fmt = table_format(cfg.path, opts.format)
    paths, captions = read_columns(
        cfg.path, [opts.image_column, opts.caption_column], fmt, opts.separator, opts.quote_char
    )
    if opts.confine:
        confine_paths(paths.to_pylist(), opts.root or ".", os.fspath(cfg.path))
    return ImageCaptionTable(
        paths,
        captions,
        ctx.transform,
        ctx.tokenize,
        root=opts.root,
        min_size=cfg.image_size if opts.draft else None,
        source=os.fspath(cfg.path),
    )


__all__ = [
    "BadSampleLog",
    "ImageCaptionDataset",
    "ImageCaptionTable",
    "Options",
    "build",
    "read_columns",
    "table_format",
]


def _table_labels(data: Any) -> tuple[list[str], list[str]]:
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


def labelled_images(
    data: Any, *, limit: int | None, n_per_class: int = 2, n_classes: int | None = None
) -> LabelledImages:
    """A ``filepath,label`` table as labelled images: integer labels are class indices
    (checked against ``n_classes``, or a cap, before anything that size is allocated),
    other labels are class names (sorted; matched by name to any class names given)."""
    paths, raw = _table_labels(data)
    if raw and all(v.isdigit() for v in raw):
        labels = parse_labels(raw, n_classes, os.fspath(data.path))
        count = n_classes if n_classes is not None else int(labels.max()) + 1
        names = [str(i) for i in range(count)]
        return LabelledImages(paths, labels, names, None, exact_classes=n_classes is not None)
    names = sorted(set(raw))
    index = {name: i for i, name in enumerate(names)}
    labels = np.asarray([index[v] for v in raw], dtype=np.int64)
    return LabelledImages(paths, labels, names, None, named_labels=True)


def captioned_images(data: Any, *, limit: int | None) -> CaptionedImages:
    """Unique image paths (first-appearance order) and each one's captions."""

    def identity(x: Any) -> Any:
        return x

    table = build(BuildContext(data, identity, identity))
    languages = _languages(data)
    captions: dict[str, list[str]] = {}
    caption_languages: dict[str, list[str]] = {}
    for row in range(len(table)):
        raw, caption = table.image_path(row), table.caption(row)
        if raw and caption and caption.strip():
            captions.setdefault(table.resolve(raw), []).append(caption)
            if languages is not None:
                language = (languages[row].as_py() or "").strip() or "unknown"
                caption_languages.setdefault(table.resolve(raw), []).append(language)
    keep = subset_indices(len(captions), limit)
    paths = [list(captions)[i] for i in keep]
    return CaptionedImages(
        paths,
        [captions[p] for p in paths],
        [caption_languages[p] for p in paths] if languages is not None else None,
    )


def _languages(data: Any) -> Any | None:
    """The table's language column (Arrow strings), or ``None`` when it has none."""
    opts: Options = source_options(data, "csv", what="tabular data options")
    fmt = table_format(data.path, opts.format)
    if opts.language_column not in column_names(data.path, fmt, opts.separator, opts.quote_char):
        return None
    (column,) = read_columns(
        data.path, [opts.language_column], fmt, opts.separator, opts.quote_char
    )
    return column
