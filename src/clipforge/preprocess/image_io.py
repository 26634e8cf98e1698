"""Strict image decoding: every failure becomes an :class:`ImageDecodeError` naming the file."""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile

from ..errors import InputError

PathLike = str | os.PathLike

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

_TRUNCATION_LOCK = threading.Lock()


class ImageDecodeError(InputError, ValueError):
    """An image file could not be read or fully decoded.

    Attributes:
        path: the file that failed.
        reason: a short human-readable cause.
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot decode image {self.path!r}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.path, self.reason))


@contextmanager
def _strict_truncation() -> Iterator[None]:
    """Decode with ``ImageFile.LOAD_TRUNCATED_IMAGES`` False, even if someone set it True."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _TRUNCATION_LOCK:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved


def decode_image(
    source: Path | BinaryIO, name: str | Path, *, min_size: int | None = None
) -> Image.Image:
    """Fully decode an image from a file path or a binary stream.

    Every failure (not an image, truncated, corrupt, decompression bomb, ...) raises
    :class:`ImageDecodeError` naming ``name``; ``min_size`` as in :func:`load_image`.
    """
    try:
        with warnings.catch_warnings():
            # PIL warns above MAX_IMAGE_PIXELS and raises above twice that: both are errors.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
        with image:
            if min_size is not None and image.format == "JPEG":
                image.draft(None, (min_size, min_size))
            with _strict_truncation():
                image.load()
        return image
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(name, "not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(name, f"decompression bomb guard: {exc}") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, EOFError, ...
        raise ImageDecodeError(name, f"{type(exc).__name__}: {exc}") from exc


def load_image(path: PathLike, *, min_size: int | None = None) -> Image.Image:
    """Open and fully decode an image file (pixels loaded, file closed).

    Truncated, corrupt, empty, missing and non-image files, and images above PIL's
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``), raise :class:`ImageDecodeError`;
    truncated data is never silently accepted, whatever ``ImageFile.LOAD_TRUNCATED_IMAGES``
    says. ``min_size`` (opt-in, lossy): decode JPEGs with DCT scaling (``Image.draft``) to
    the smallest size whose sides stay >= ``min_size``.
    """
    p = Path(os.fspath(path))
    try:
        info = p.stat()
    except OSError as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else f"cannot stat: {exc}"
        raise ImageDecodeError(p, reason) from exc
    if not stat.S_ISREG(info.st_mode):
        raise ImageDecodeError(p, "not a regular file")
    if info.st_size == 0:
        raise ImageDecodeError(p, "file is empty (0 bytes)")
    return decode_image(p, p, min_size=min_size)


def _float_to_8bit(values: np.ndarray) -> np.ndarray:
    """Mode "F" pixels as uint8: [0, 1] scaled by 255, [0, 255] kept, else min-max rescaled."""
    if not np.isfinite(values).all():
        raise ValueError("float (mode F) image has NaN or infinite pixels")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
        scaled = values.astype(np.float64) * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        scaled = values.astype(np.float64)
    else:
        scaled = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255)


def to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float greyscale images to 8-bit ``"L"``; others unchanged.

    PIL's ``convert("RGB")`` clips such images to 255 (a 16-bit photo becomes almost all
    white; a float image in [0, 1] all black), so the reference pipelines are wrong for
    them. We deliberately deviate: ``I;16*`` modes keep the high byte (``value >> 8``); mode
    ``"I"`` is kept as is when its values fit in [0, 255], shifted by 8 bits when they fit
    in [0, 65535], and otherwise rescaled linearly from its [min, max] range to [0, 255].
    Mode ``"F"`` (float TIFFs) is scaled by 255 when its values fit in [0, 1], kept (rounded)
    when they fit in [0, 255], and otherwise rescaled from [min, max]; NaN or infinite pixels
    raise ``ValueError``.
    """
    if image.mode == "F":
        return Image.fromarray(_float_to_8bit(np.asarray(image)).astype(np.uint8))
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image)
    if image.mode != "I":
        scaled = values.astype(np.uint16) >> 8
    else:
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and hi <= 255:
            scaled = values
        elif lo >= 0 and hi <= 65535:
            scaled = values >> 8
        else:
            scaled = (values.astype(np.int64) - lo) * 255 // max(hi - lo, 1)
    return Image.fromarray(np.ascontiguousarray(scaled, dtype=np.uint8), mode="L")
