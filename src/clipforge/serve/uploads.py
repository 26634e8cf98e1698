"""Query-image uploads: bytes bounded while the body is read, pixels bounded before decoding,
decodes bounded by the :class:`~clipforge.serve.limits.DecodePool`.

The byte limit is enforced by FastAPI's per-route ``max_body_size`` (Starlette's
``RequestBodyLimitMiddleware``): a declared ``Content-Length`` above it is answered 413
before any body is read, and a chunked body is cut off with 413 as soon as it passes it.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

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

FORM_LIMITS = {"max_files": 1, "max_fields": 8, "max_part_size": 16 * 1024}


def body_limit(config: ServeConfig) -> int:
    """The whole request body's limit for an upload route."""
    return config.max_upload_bytes + MULTIPART_OVERHEAD


def upload_vector(index: Index, upload: UploadFile, config: ServeConfig) -> np.ndarray:
    """The query vector of an uploaded image (run in a decode worker).

    400: empty or not an image; 413: more bytes or pixels than allowed.
    """
    upload.file.seek(0)
    data = upload.file.read(config.max_upload_bytes + 1)
    if len(data) > config.max_upload_bytes:
        raise HTTPException(413, f"upload larger than {config.max_upload_bytes} bytes")
    if not data:
        raise HTTPException(400, "empty upload")
    image = decode_upload(data, config.max_upload_pixels)
    try:
        return image_vector(index.model, image)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """Decode ``data`` after checking its header's pixel count against ``max_pixels``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
    except Exception as exc:  # PIL raises many types for a non-image
        raise HTTPException(400, "the upload is not a recognised image") from exc
    if width * height > max_pixels:
        raise HTTPException(
            413, f"image has {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    try:
        return decode_image(io.BytesIO(data), "<upload>")
    except ImageDecodeError as exc:
        if isinstance(exc.__cause__, MemoryError):
            raise HTTPException(503, "out of memory decoding the upload; retry later") from exc
        raise HTTPException(400, f"cannot decode the upload: {exc.reason}") from exc
