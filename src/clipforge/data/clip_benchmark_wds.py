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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..configs import ConfigError
from ..errors import InputError
from ..preprocess import ImageDecodeError
from ..preprocess.image_io import decode_image
from .samples import LabelledImages, subset_indices
from .sources import BuildContext

__all__ = ["Options", "build", "read_shards"]

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")


@dataclass
class Options:
    """``data.options`` of the ``clip_benchmark`` kind."""

    split: str = "test"


MAX_MEMBER_BYTES = 64 * 2**20  # a larger member is a failed sample, never read


def _members(shards: list[Path]) -> Iterator[tuple[int, Path, tarfile.TarFile, Any]]:
    """``(sample ordinal, shard, tar, member)`` for every regular member, streamed."""
    ordinal, previous = -1, None
    for shard in shards:
        with tarfile.open(shard, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key = (shard, Path(member.name).name.partition(".")[0])
                if key != previous:
                    ordinal, previous = ordinal + 1, key
                yield ordinal, shard, tar, member
                # streaming: no growing member list (``members`` is an undocumented
                # instance attribute that typeshed's TarFile does not declare)
                tar.members.clear()  # pyright: ignore[reportAttributeAccessIssue]


def read_shards(
    root: str | os.PathLike, split: str = "test", limit: int | None = None,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> list[dict[str, Any]]:  # fmt: skip
    """The samples of ``root/<split>/*.tar`` as ``{key: bytes or text, "__key__": ...}``.

    ``limit``: an evenly spaced subset, chosen after a pass over the member headers, so only
    kept samples are read; a member over ``max_member_bytes`` is not read (the sample gets
    an ``"__error__"``)."""

    shards = sorted((Path(root) / split).glob("*.tar"))
    if not shards:
        raise ConfigError(f"no shards in {os.fspath(Path(root) / split)!r} (expected *.tar)")
    try:
        count = 1 + max((o for o, *_ in _members(shards)), default=-1)
        keep = set(subset_indices(count, limit).tolist())
        samples: dict[int, dict[str, Any]] = {}
        for ordinal, shard, tar, member in _members(shards):
            if ordinal not in keep:
                if ordinal > max(keep, default=-1):
                    break
                continue
            key, _, ext = Path(member.name).name.partition(".")
            sample = samples.setdefault(ordinal, {"__key__": key, "__shard__": shard.name})
            if member.size > max_member_bytes:
                sample["__error__"] = f"{member.name}: {member.size} bytes > {max_member_bytes}"
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            sample[ext.lower()] = data if ext.lower() in IMAGE_KEYS else data.decode()
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(f"{os.fspath(Path(root) / split)!r}: unreadable shard: {err}") from None
    return list(samples.values())


def decode(sample: dict[str, Any]) -> Any:
    """The sample's image (PIL, fully decoded); raises ``ImageDecodeError`` if unreadable."""

    ext = next((k for k in IMAGE_KEYS if k in sample), None)
    name = f"{sample['__shard__']}:{sample['__key__']}"
    if "__error__" in sample:
        raise ImageDecodeError(name, sample["__error__"])
    if ext is None:
        raise ImageDecodeError(name, "no image in the sample")
    return decode_image(io.BytesIO(sample[ext]), name)


def build(ctx: BuildContext) -> Any:
    """Not a training source: a :class:`ConfigError` pointing to ``webdataset``."""
    del ctx
    raise ConfigError("data kind 'clip_benchmark' is for evaluation; train with kind 'webdataset'")


def labelled_images(
    data: Any, *, limit: int | None, n_per_class: int = 2, n_classes: int | None = None
) -> LabelledImages:
    """A CLIP_benchmark WebDataset directory as labelled images (undecodable samples are
    reported in ``failures``, the others kept)."""
    root = Path(data.path)
    samples = read_shards(root, data.typed_options().split, limit)  # only kept samples read
    names = [n.strip() for n in (root / "classnames.txt").read_text("utf-8").splitlines()]
    names = [n for n in names if n]
    template_file = root / "zeroshot_classification_templates.txt"
    templates = str(template_file) if template_file.is_file() else None
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
    labels_array = np.asarray(labels, dtype=np.int64)
    return LabelledImages(images, labels_array, names, templates, failures)
