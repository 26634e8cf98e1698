"""CLIP_benchmark's WebDataset layout, for evaluation: a directory with ``classnames.txt``,
``zeroshot_classification_templates.txt`` and ``<split>/*.tar`` shards whose samples are
``key.webp|png|jpg`` + ``key.cls`` (class index) or ``key.txt`` (captions, one per line).

Evaluation only (``clipforge.eval.datasets`` reads it); train on such shards with the
``webdataset`` kind. ``cfg.options``: ``split`` (``"test"``).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..configs import ConfigError
from ..preprocess import ImageDecodeError
from ..preprocess.image_io import decode_image
from .samples import LabelledImages, subset_indices

__all__ = ["Options", "build", "read_shards"]

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")


@dataclass
class Options:
    """``data.options`` of the ``clip_benchmark`` kind."""

    split: str = "test"


def read_shards(root: str | os.PathLike, split: str = "test") -> list[dict[str, Any]]:
    """The samples of ``root/<split>/*.tar`` as ``{key: bytes or text, "__key__": ...}``."""
    shards = sorted((Path(root) / split).glob("*.tar"))
    if not shards:
        raise ConfigError(f"no shards in {os.fspath(Path(root) / split)!r} (expected *.tar)")
    samples: list[dict[str, Any]] = []
    for shard in shards:
        current: dict[str, Any] = {}
        with tarfile.open(shard) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = Path(member.name).name.partition(".")
                if current.get("__key__") != key:
                    if current:
                        samples.append(current)
                    current = {"__key__": key, "__shard__": shard.name}
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                current[ext.lower()] = data if ext.lower() in IMAGE_KEYS else data.decode()
        if current:
            samples.append(current)
    return samples


def decode(sample: dict[str, Any]) -> Any:
    """The sample's image (PIL, fully decoded); raises ``ImageDecodeError`` if unreadable."""

    ext = next((k for k in IMAGE_KEYS if k in sample), None)
    name = f"{sample['__shard__']}:{sample['__key__']}"
    if ext is None:
        raise ImageDecodeError(name, "no image in the sample")
    return decode_image(io.BytesIO(sample[ext]), name)


def build(cfg: Any, transform: Any, tokenize: Any, *, seed: int, rank: int, world_size: int) -> Any:
    """Not a training source: a :class:`ConfigError` pointing to ``webdataset``."""
    raise ConfigError("data kind 'clip_benchmark' is for evaluation; train with kind 'webdataset'")


def labelled_images(data: Any, *, limit: int | None, n_per_class: int = 2) -> LabelledImages:
    """A CLIP_benchmark WebDataset directory as labelled images (undecodable samples are
    reported in ``failures``, the others kept)."""
    root = Path(data.path)
    samples = read_shards(root, data.typed_options().split)
    samples = [samples[i] for i in subset_indices(len(samples), limit)]
    names = [n.strip() for n in (root / "classnames.txt").read_text("utf-8").splitlines()]
    template_file = root / "zeroshot_classification_templates.txt"
    templates = str(template_file) if template_file.is_file() else None
    images, labels, failures = [], [], []
    for sample in samples:
        try:
            images.append(decode(sample))
            labels.append(int(sample["cls"]))
        except (ImageDecodeError, KeyError, ValueError) as err:
            failures.append((f"{sample['__shard__']}:{sample['__key__']}", str(err)))
    labels_array = np.asarray(labels, dtype=np.int64)
    return LabelledImages(images, labels_array, [n for n in names if n], templates, failures)
