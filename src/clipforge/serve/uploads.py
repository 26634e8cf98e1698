"""Query-image uploads: bytes bounded while the body is read, pixels bounded before decoding,
decodes bounded by the :class:`~clipforge.serve.limits.DecodePool`.

The byte limit is enforced by FastAPI's per-route ``max_body_size`` (Starlette's
``RequestBodyLimitMiddleware``): a declared ``Content-Length`` above it is answered 413
before any body is read, and a chunked body is cut off with 413 as soon as it passes it.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import HTTPException, UploadFile
from PIL import Image

from ..index.querying import image_vector
from ..preprocess.image_io import ImageDecodeError, decode_image

if TYPE_CHECKING:
    from ..index import Index
    from .app import ServeConfig

MULTIPART_OVERHEAD = 64 * 1024
"""Bytes allowed on top of ``max_upload_bytes`` for the multipart framing and text fields."""

FORM_LIMITS: Any = {"max_files": 1, "max_fields": 8, "max_part_size": 16 * 1024}  # fastapi types it with a private TypedDict


def body_limit(config: ServeConfig) -> int:
    """The whole request body's limit for an upload route."""
    return config.max_upload_bytes + MULTIPART_OVERHEAD


def check_upload(upload: UploadFile, config: ServeConfig) -> None:
    """Before waiting for a decode worker: 400 if empty or not an image, 413 if more bytes
    or (by the header alone) more pixels than allowed."""
    size = upload.size if upload.size is not None else _size(upload.file)
    if size > config.max_upload_bytes:
        raise HTTPException(413, f"upload larger than {config.max_upload_bytes} bytes")
    if size == 0:
        raise HTTPException(400, "empty upload")
    upload.file.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(upload.file) as header:
                width, height = header.size
    except Exception as exc:  # PIL raises many types for a non-image
        raise HTTPException(400, "the upload is not a recognised image") from exc
    finally:
        upload.file.seek(0)
    if width * height > config.max_upload_pixels:
        raise HTTPException(
            413,
            f"image has {width}x{height} = {width * height} pixels; "
            f"the limit is {config.max_upload_pixels}",
        )


def _size(file) -> int:
    file.seek(0, io.SEEK_END)
    return file.tell()


def upload_vector(index: Index, upload: UploadFile) -> np.ndarray:
    """The query vector of an upload passed by :func:`check_upload` (in a decode worker)."""
    upload.file.seek(0)
    try:
        image = decode_image(upload.file, "<upload>")
    except ImageDecodeError as exc:
        if isinstance(exc.__cause__, MemoryError):
            raise HTTPException(503, "out of memory decoding the upload; retry later") from exc
        raise HTTPException(400, f"cannot decode the upload: {exc.reason}") from exc
    try:
        return image_vector(index.model, image, index.precision)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
