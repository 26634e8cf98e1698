"""Phone and camera formats for the index: HEIC/HEIF, AVIF, RAW previews, EXIF orientation.

The index opens photos through :func:`open_photo`, which

- decodes HEIC/HEIF with ``pillow-heif`` and AVIF with Pillow's own plugin (Pillow >= 11.3)
  or ``pillow-avif-plugin``; a file whose plugin is missing raises :class:`MissingPluginError`
  naming the package to install (it is recorded in the index's errors, never skipped);
- reads the embedded JPEG preview of RAW files (CR2, NEF, ARW, DNG, ...) with ``rawpy``
  (LibRaw), without demosaicing the raw data;
- applies the EXIF orientation (tags 1-8), so a photo taken sideways is embedded upright.

Only indexing does this: the model's own ``preprocess`` stays exactly open_clip's (it does
not rotate), so parity with open_clip holds for every image passed to it directly.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, features

from ..preprocess import ImageDecodeError, load_image
from ..preprocess.image_io import decode_image

HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
AVIF_SUFFIXES = frozenset({".avif"})
RAW_SUFFIXES = frozenset(
    {".cr2", ".cr3", ".nef", ".nrw", ".arw", ".dng", ".orf", ".rw2", ".raf", ".pef", ".srw"}
)
PHOTO_SUFFIXES = HEIF_SUFFIXES | AVIF_SUFFIXES | RAW_SUFFIXES
"""Suffixes the index finds in folders in addition to the common image formats."""

INSTALL_HINT = "pip install 'clipforge[photos]'"
AVIF_PACKAGE = "pillow>=11.3"
"""Pillow's wheels decode AVIF from 11.3 on (``pillow-avif-plugin`` is used if installed)."""


class MissingPluginError(ImageDecodeError):
    """A photo's format needs an optional package that is not installed."""

    def __init__(self, path: str | os.PathLike, kind: str, package: str) -> None:
        super().__init__(path, plugin_reason(kind, package))


def plugin_reason(kind: str, package: str) -> str:
    """The recorded reason of a file whose plugin is missing (one line, names the package)."""
    return f"{kind} needs the {package} package: {INSTALL_HINT} (or pip install '{package}')"


@cache
def heif_available() -> bool:
    """Register ``pillow-heif``'s HEIF opener with Pillow (once); whether it is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


@cache
def avif_available() -> bool:
    """Pillow's own AVIF plugin (Pillow >= 11.3 wheels), else ``pillow-avif-plugin``."""
    if features.check("avif"):
        return True
    try:
        import pillow_avif  # type: ignore[import-not-found]  # noqa: F401  (registers itself)
    except ImportError:
        return False
    return True


@cache
def rawpy_available() -> bool:
    try:
        import rawpy  # noqa: F401
    except ImportError:
        return False
    return True


def register_plugins() -> None:
    """Register the installed HEIF/AVIF plugins with Pillow in this process (idempotent)."""
    heif_available()
    avif_available()


def missing_plugin(name: str | os.PathLike) -> tuple[str, str] | None:
    """``(kind, package)`` if opening ``name`` needs a package that is not installed."""
    suffix = Path(name).suffix.lower()
    if suffix in HEIF_SUFFIXES and not heif_available():
        return "HEIC/HEIF", "pillow-heif"
    if suffix in AVIF_SUFFIXES and not avif_available():
        return "AVIF", AVIF_PACKAGE
    if suffix in RAW_SUFFIXES and not rawpy_available():
        return "RAW", "rawpy"
    return None


def _check_plugin(name: str | os.PathLike) -> None:
    missing = missing_plugin(name)
    if missing is not None:
        raise MissingPluginError(name, *missing)


def orient(image: Image.Image) -> Image.Image:
    """The image turned upright by its EXIF orientation (tag 274, values 1-8)."""
    return ImageOps.exif_transpose(image)


def raw_preview(source: str | os.PathLike | BinaryIO, name: str | os.PathLike) -> Image.Image:
    """The embedded JPEG (or bitmap) preview of a RAW file, decoded; no demosaicing."""
    import rawpy

    try:
        with rawpy.imread(source if not isinstance(source, os.PathLike) else str(source)) as raw:
            thumb = raw.extract_thumb()
            flip = raw.sizes.flip
    except Exception as exc:  # LibRawNoThumbnailError, LibRawFileUnsupportedError, ...
        raise ImageDecodeError(name, f"no readable RAW preview: {type(exc).__name__}: {exc}") from exc
    data = thumb.data
    if isinstance(data, np.ndarray):  # ThumbFormat.BITMAP: RGB pixels
        image = Image.fromarray(data)
    else:
        image = decode_image(io.BytesIO(data), os.fspath(name))
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        return orient(image)
    if flip in _FLIPS:  # LibRaw's flip: the RAW file's own orientation tag
        image = image.transpose(_FLIPS[flip])
    return image


_FLIPS = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def open_photo(path: str | os.PathLike) -> Image.Image:
    """Decode any indexable photo upright (picklable: used inside DataLoader workers).

    Raises :class:`~clipforge.preprocess.ImageDecodeError` (a :class:`MissingPluginError`
    when the format's package is not installed)."""
    _check_plugin(path)
    if Path(path).suffix.lower() in RAW_SUFFIXES:
        return raw_preview(path, path)
    return orient(load_image(path))


def decode_photo(
    file: BinaryIO, name: str | os.PathLike, *, min_size: int | None = None
) -> Image.Image:
    """:func:`open_photo` for an open file (the service's thumbnails)."""
    _check_plugin(name)
    if Path(name).suffix.lower() in RAW_SUFFIXES:
        return raw_preview(file, name)
    return orient(decode_image(file, os.fspath(name), min_size=min_size))


def plugin_errors_now_fixable(reasons: Iterable[str]) -> list[str]:
    """Recorded missing-plugin reasons whose package is now installed (retry those files)."""
    fixable = []
    for kind, package, available in (
        ("HEIC/HEIF", "pillow-heif", heif_available),
        ("AVIF", AVIF_PACKAGE, avif_available),
        ("RAW", "rawpy", rawpy_available),
    ):
        reason = plugin_reason(kind, package)
        if reason in reasons and available():
            fixable.append(reason)
    return fixable


def error_kinds(errors: Iterable[tuple[str, str]]) -> list[tuple[str, int]]:
    """Skipped files grouped by kind: ``("HEIC/HEIF needs the pillow-heif package…", 3)``,
    ``(".jpg: not a recognised image format", 1)``, most frequent first."""
    counts: Counter[str] = Counter()
    for path, reason in errors:
        if "needs the" in reason and INSTALL_HINT in reason:
            counts[reason] += 1
        else:
            suffix = Path(path).suffix.lower() or "(no suffix)"
            counts[f"{suffix}: {reason.split(':')[0]}"] += 1
    return counts.most_common()


def summary_line(errors: Iterable[tuple[str, str]]) -> str:
    """``skipped: 3 × HEIC/HEIF needs …; 1 × .jpg: not a recognised image format`` or ``""``."""
    kinds = error_kinds(errors)
    if not kinds:
        return ""
    return "skipped: " + "; ".join(f"{n} × {kind}" for kind, n in kinds)
