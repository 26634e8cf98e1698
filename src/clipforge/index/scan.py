"""File discovery, content hashing, image headers and model fingerprints for the index."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image

from ..models.protocols import ClipModel
from .photos import PHOTO_SUFFIXES
from .video import VIDEO_SUFFIXES

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
IMAGE_SUFFIXES = IMAGE_SUFFIXES | PHOTO_SUFFIXES  # HEIC/HEIF, AVIF, RAW previews
INDEXED_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


def expand(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Absolute paths: files as given, directories expanded recursively to image and video
    files."""
    found: list[str] = []
    for item in paths:
        path = Path(item).absolute()
        if path.is_dir():
            found += sorted(
                str(p)
                for p in path.rglob("*")
                if p.suffix.lower() in INDEXED_SUFFIXES and not p.is_dir()
            )
        else:
            found.append(str(path))
    return found


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (raises ``OSError`` if unreadable)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO swapped in cannot block us
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def image_size(path: str) -> tuple[int, int]:
    """Upright ``(width, height)`` from the header only; ``(0, 0)`` if it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
                if image.getexif().get(274) in (5, 6, 7, 8):  # EXIF orientation: a quarter turn
                    return height, width  # the upright size, as the photo is embedded
                return width, height
    except Exception:  # the embedding step records the real reason
        return 0, 0


def model_fingerprint(model: ClipModel) -> str:
    """A digest of the architecture, the preprocessing and the exact bytes of every weight.

    Two models give the same fingerprint only if their embeddings can be compared. Bytes,
    not sums: a float reduction depends on the thread count, and the same model must get
    the same id in every process.
    """
    digest = hashlib.sha256()
    config = {
        "model": model.config.to_dict(),
        "preprocess": dataclasses.asdict(model.preprocess_config),
    }
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(memoryview(raw.numpy()))
    return digest.hexdigest()[:32]
