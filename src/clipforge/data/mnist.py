"""MNIST-style IDX files (``t10k-images-idx3-ubyte[.gz]`` + ``t10k-labels-idx1-ubyte[.gz]``).

``cfg.path`` is the directory holding them; ``cfg.options`` (:class:`Options`): ``split``
(the file prefix, ``"t10k"`` or ``"train"``), ``templates`` (captions for training; default
CLIP_benchmark's MNIST prompt) and ``classnames`` (default ``"0"`` … ``"9"``). Images are
grey 28×28 and are given to the model as RGB.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..configs import ConfigError
from ..templates import get_templates
from .folder import template_index
from .samples import LabelledImages, subset_indices
from .sources import source_options
from .tabular import Tokenize, Transform, to_tokens

__all__ = ["MnistCaptions", "Options", "build", "load_mnist", "read_idx"]

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Options:
    """``data.options`` of the ``mnist`` kind."""

    split: str = "t10k"
    templates: str | list[str] = "mnist"
    classnames: list[str] | None = None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ConfigError(f"{os.fspath(path)!r} is not an IDX file")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", ndim, 4))
    array = np.frombuffer(data, _DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ConfigError(f"{os.fspath(path)!r}: truncated IDX file ({array.size} values)")
    return array.reshape(shape)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"MNIST directory {os.fspath(root)!r} has no {name}[.gz]")


def load_mnist(root: str | os.PathLike, split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of ``split`` in ``root``."""
    root = Path(root)
    images = read_idx(_find(root, f"{split}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{split}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ConfigError(f"{os.fspath(root)!r}: {images.shape} images for {len(labels)} labels")
    return images, labels


def to_pil(image: np.ndarray) -> Image.Image:
    """One grey digit as an RGB PIL image."""
    return Image.fromarray(np.ascontiguousarray(image), mode="L").convert("RGB")


class MnistCaptions(Dataset):
    """Digits captioned from templates (one deterministic template per sample)."""

    def __init__(self, root: str | os.PathLike, transform: Transform, tokenize: Tokenize,
                 options: Options, seed: int = 0) -> None:  # fmt: skip
        self.images, self.targets = load_mnist(root, options.split)
        self.classnames = options.classnames or [str(i) for i in range(10)]
        self.templates = get_templates(options.templates)
        self.transform, self.tokenize, self.seed = transform, tokenize, seed

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Any:
        template = self.templates[template_index(self.seed, index, len(self.templates))]
        caption = template.replace("{c}", self.classnames[int(self.targets[index])])
        return self.transform(to_pil(self.images[index])), to_tokens(self.tokenize, caption)


def build(
    cfg: Any, transform: Transform, tokenize: Tokenize, *, seed: int, rank: int, world_size: int
) -> MnistCaptions:
    """A :class:`MnistCaptions` for the IDX files in ``cfg.path``."""
    del rank, world_size
    opts: Options = source_options(cfg, "mnist", what="mnist data option")
    return MnistCaptions(cfg.path, transform, tokenize, opts, seed)


def labelled_images(data: Any, *, limit: int | None, n_per_class: int = 2) -> LabelledImages:
    """MNIST IDX files as labelled images (the subset is taken before PIL conversion)."""
    opts = data.typed_options()
    images, labels = load_mnist(data.path, opts.split)
    keep = subset_indices(len(labels), limit)
    images, labels = images[keep], labels[keep]
    names = opts.classnames or [str(i) for i in range(10)]
    return LabelledImages([to_pil(i) for i in images], labels, names, opts.templates)
