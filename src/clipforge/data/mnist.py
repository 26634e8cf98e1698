"""MNIST-style IDX files (``t10k-images-idx3-ubyte[.gz]`` + ``t10k-labels-idx1-ubyte[.gz]``).

``cfg.path`` is the directory holding them; ``cfg.options`` (:class:`Options`): ``split``
(the file prefix, ``"t10k"`` or ``"train"``), ``templates`` (captions for training; default
CLIP_benchmark's MNIST prompt) and ``classnames`` (default ``"0"`` … ``"9"``). Images are
grey 28×28 and are given to the model as RGB.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..configs import ConfigError
from ..errors import InputError
from ..templates import get_templates
from .folder import template_index
from .guards import check_labels
from .samples import LabelledImages, subset_indices
from .sources import BuildContext, source_options
from .tabular import Tokenize, Transform, to_tokens

__all__ = ["IdxHeader", "MnistCaptions", "Options", "build", "idx_header", "load_mnist", "read_idx"]

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Options:
    """``data.options`` of the ``mnist`` kind."""

    split: str = "t10k"
    templates: str | list[str] = "mnist"
    classnames: list[str] | None = None


_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data more than this


@dataclass(frozen=True)
class IdxHeader:
    """An IDX file's dtype, shape and payload offset, checked against the file size."""

    path: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def item_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=object)) * self.dtype.itemsize


def _open(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _expected_size_ok(path: Path, total: int) -> bool:
    """Whether ``total`` decompressed bytes fit the file: its size for a plain file; the
    gzip trailer (size mod 2**32) and the maximal deflate ratio for a ``.gz``."""
    size = path.stat().st_size
    if path.suffix != ".gz":
        return size == total
    if total > size * _MAX_DEFLATE_RATIO + 1024 or size < 18:
        return False
    with open(path, "rb") as raw:
        raw.seek(-4, os.SEEK_END)
        return int.from_bytes(raw.read(4), "little") == total % 2**32


def idx_header(path: str | os.PathLike) -> IdxHeader:
    """The header of IDX file ``path``; :class:`InputError` if the declared dimensions do
    not match the file's size (nothing past the header is read)."""
    path = Path(path)
    with _open(path) as f:
        try:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _DTYPES:
                raise InputError(f"{os.fspath(path)!r} is not an IDX file")
            dims = f.read(4 * head[3])
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(f"{os.fspath(path)!r}: unreadable IDX file: {err}") from None
    if len(dims) < 4 * head[3] or head[3] == 0:
        raise InputError(f"{os.fspath(path)!r}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(dims, ">i4"))
    dtype = np.dtype(_DTYPES[head[2]])
    header = IdxHeader(path, dtype, shape, 4 + len(dims))
    total = header.offset + shape[0] * header.item_bytes
    if min(shape) < 0 or not _expected_size_ok(path, total):
        raise InputError(
            f"{os.fspath(path)!r}: IDX header declares {shape} {dtype} values, "
            "which does not match the file size"
        )
    return header


def read_idx(path: str | os.PathLike, keep: np.ndarray | None = None) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array; ``keep``: only these items
    (sorted indices along the first axis), streamed without reading the rest into memory."""
    header = idx_header(path)
    keep = np.arange(header.shape[0]) if keep is None else np.asarray(keep, dtype=np.int64)
    size = header.item_bytes
    chunks = []
    with _open(header.path) as f:
        try:
            for item in keep.tolist():
                f.seek(header.offset + item * size)
                chunks.append(f.read(size))
                if len(chunks[-1]) < size:
                    raise InputError(f"{os.fspath(path)!r}: truncated IDX file (item {item})")
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(f"{os.fspath(path)!r}: unreadable IDX file: {err}") from None
    array = np.frombuffer(b"".join(chunks), header.dtype)
    return array.reshape((len(keep), *header.shape[1:]))


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"MNIST directory {os.fspath(root)!r} has no {name}[.gz]")


def load_mnist(
    root: str | os.PathLike, split: str = "t10k", limit: int | None = None,
    n_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of ``split`` in ``root``; ``limit``:
    an evenly spaced subset, chosen from the headers before any item is read. Labels are
    refused (:class:`~clipforge.data.guards.LabelError`) if negative or ``>= n_classes``."""
    root = Path(root)
    images = idx_header(_find(root, f"{split}-images-idx3-ubyte"))
    labels = idx_header(_find(root, f"{split}-labels-idx1-ubyte"))
    if len(images.shape) != 3 or len(labels.shape) != 1 or images.shape[0] != labels.shape[0]:
        raise InputError(f"{os.fspath(root)!r}: {images.shape} images for {labels.shape} labels")
    keep = subset_indices(labels.shape[0], limit)
    targets = check_labels(read_idx(labels.path, keep), n_classes, os.fspath(labels.path))
    return read_idx(images.path, keep), targets


def to_pil(image: np.ndarray) -> Image.Image:
    """One grey digit as an RGB PIL image."""
    return Image.fromarray(np.ascontiguousarray(image), mode="L").convert("RGB")


class MnistCaptions(Dataset):
    """Digits captioned from templates (one deterministic template per sample)."""

    def __init__(self, root: str | os.PathLike, transform: Transform, tokenize: Tokenize,
                 options: Options, seed: int = 0) -> None:  # fmt: skip
        self.classnames = options.classnames or [str(i) for i in range(10)]
        self.images, self.targets = load_mnist(root, options.split, None, len(self.classnames))
        self.templates = get_templates(options.templates)
        self.transform, self.tokenize, self.seed = transform, tokenize, seed

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Any:
        template = self.templates[template_index(self.seed, index, len(self.templates))]
        caption = template.replace("{c}", self.classnames[int(self.targets[index])])
        return self.transform(to_pil(self.images[index])), to_tokens(self.tokenize, caption)


def build(ctx: BuildContext) -> MnistCaptions:
    """A :class:`MnistCaptions` for the IDX files in ``cfg.path``."""
    opts: Options = source_options(ctx.cfg, "mnist", what="mnist data option")
    return MnistCaptions(ctx.cfg.path, ctx.transform, ctx.tokenize, opts, ctx.seed)


def labelled_images(
    data: Any, *, limit: int | None, n_per_class: int = 2, n_classes: int | None = None
) -> LabelledImages:
    """MNIST IDX files as labelled images: the subset is chosen from the headers and only
    its items are read; labels are checked against the class count (the class names given,
    the options', else 10)."""
    opts = data.typed_options()
    names = opts.classnames or [str(i) for i in range(10)]
    images, labels = load_mnist(data.path, opts.split, limit, n_classes or len(names))
    return LabelledImages([to_pil(i) for i in images], labels, names, opts.templates)
