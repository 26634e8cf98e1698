"""Indexed files by id: the original bytes and JPEG thumbnails, each served only while the
file on disk is still the one that was indexed.

Before any byte is read, the stored path is resolved (:func:`os.path.realpath`) and must lie
under an indexed root; the resolved path is opened with ``O_NOFOLLOW | O_NONBLOCK`` (a
symlink swapped in after resolving fails; a FIFO does not block) and the open descriptor is
``fstat``-ed: it must be a regular file with the device and inode recorded when it was
indexed, or (rows indexed before those were recorded, or a file restored under a new inode)
hold the same bytes (SHA-256). The bytes served are read from that same descriptor, so a
swap between the checks and the read changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Annotated, BinaryIO

from fastapi import FastAPI, Header, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from PIL import Image

from ..errors import InputError
from ..index.metadata import ImageRow, file_identity
from ..index.photos import decode_photo
from ..index.video import VideoDecodeError, is_video, poster
from ..preprocess.image_io import ImageDecodeError
from .limits import DecodePool, ImageId
from .ranges import byte_range, media_type, read_span

if TYPE_CHECKING:
    from .app import ServeConfig
    from .jobs import ServiceState

CHUNK = 1 << 16


class ServedFileRefused(InputError):
    """The file at an indexed image's path is no longer the file that was indexed (a symlink
    or another file swapped in, outside the indexed folders, not a regular file)."""

    http_status = 403


def open_served_file(row: ImageRow, roots: Sequence[str]) -> tuple[BinaryIO, os.stat_result]:
    """Open the file of ``row`` for reading, or refuse it (see the module docstring).

    Raises ``HTTPException(404)`` if it is gone, :class:`ServedFileRefused` (403) if it is
    not the indexed file any more.
    """
    real = os.path.realpath(row.path)
    if roots and not _under(real, roots):
        raise ServedFileRefused(
            f"image {row.id}: its path now resolves outside the indexed folders"
        )
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError as exc:
        raise HTTPException(404, f"image {row.id}: its file is gone") from exc
    except OSError as exc:  # ELOOP: a symlink appeared after resolving; EACCES; ...
        raise ServedFileRefused(f"image {row.id}: cannot open its file ({exc.strerror})") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ServedFileRefused(f"image {row.id}: its path is no longer a regular file")
    file = os.fdopen(fd, "rb")
    try:
        if not _is_indexed_file(row, st, file):
            raise ServedFileRefused(
                f"image {row.id}: its file was replaced since indexing (re-index to serve it)"
            )
    except BaseException:
        file.close()
        raise
    return file, st


def _under(real: str, roots: Sequence[str]) -> bool:
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(os.path.join(base, "")):
            return True
    return False


def _is_indexed_file(row: ImageRow, st: os.stat_result, file: BinaryIO) -> bool:
    """Same device and inode as indexed; else (unknown or changed) the same SHA-256."""
    if row.device is not None and (row.device, row.inode) == file_identity(st):
        return True
    if st.st_size != row.size:
        return False
    digest = hashlib.sha256()
    for chunk in iter(lambda: file.read(1 << 20), b""):
        digest.update(chunk)
    same = digest.hexdigest() == row.sha256
    file.seek(0)
    return same


def _read(file: BinaryIO, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes (the length announced in the headers), then close."""
    with file:
        while size > 0 and (chunk := file.read(min(CHUNK, size))):
            size -= len(chunk)
            yield chunk


class _Thumbnails:
    """An LRU of JPEG thumbnails keyed by the file's identity and stat (thread-safe)."""

    def __init__(self, size: int, px: int) -> None:
        self.size, self.px = size, px
        self.cache: OrderedDict[tuple, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, row: ImageRow, roots: Sequence[str]) -> bytes:
        file, st = open_served_file(row, roots)
        with file:
            key = (row.id, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            with self.lock:
                if key in self.cache:
                    self.cache.move_to_end(key)
                    return self.cache[key]
            try:
                if is_video(row.path):
                    image = poster(file)
                else:
                    image = decode_photo(file, row.path, min_size=self.px)  # upright, HEIC, RAW
            except ImageDecodeError as exc:
                raise HTTPException(404, f"image {row.id}: {exc.reason}") from exc
            except VideoDecodeError as exc:
                raise HTTPException(404, f"video {row.id}: {exc}") from exc
        image.thumbnail((self.px, self.px))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=85)
        with self.lock:
            self.cache[key] = out.getvalue()
            if len(self.cache) > self.size:
                self.cache.popitem(last=False)
        return out.getvalue()


def served_image_opener(state: ServiceState) -> Callable[[int], Image.Image]:
    """Open an indexed image by id with the same checks as ``/images/{id}`` (404 unknown or
    gone, 403 no longer the indexed file), decoded with the usual image limits."""

    def open_image(image_id: int) -> Image.Image:
        index = state.index
        with index.lock:
            row = index.meta.get(image_id)
        if row is None:
            raise HTTPException(404, "no indexed image with this id")
        file, _ = open_served_file(row, state.roots)
        with file:
            try:
                return decode_photo(file, row.path)
            except ImageDecodeError as exc:
                raise HTTPException(404, f"image {row.id}: {exc.reason}") from exc

    return open_image


def add_file_routes(
    app: FastAPI, state: ServiceState, config: ServeConfig, pool: DecodePool
) -> None:
    """``GET /images/{id}``, ``GET /thumbnails/{id}`` and the web page ``/``."""
    thumbnails = _Thumbnails(2048, config.thumbnail_px)

    def indexed_row(image_id: int) -> ImageRow:
        index = state.index
        with index.lock:
            row = index.meta.get(image_id)
        if row is None:
            raise HTTPException(404, "no indexed image with this id")
        return row

    @app.get("/images/{image_id}")
    async def get_image(
        image_id: ImageId, range_: Annotated[str | None, Header(alias="range")] = None
    ) -> StreamingResponse:
        """The original file of an indexed image or video (by id only; refused with 403
        unless it is still the indexed regular file under an indexed folder). One byte
        ``Range`` is answered with 206 (a browser seeks in a video with it)."""
        row = indexed_row(image_id)
        file, st = await run_in_threadpool(open_served_file, row, state.roots)
        headers = {"X-Content-Type-Options": "nosniff", "Accept-Ranges": "bytes"}
        try:
            span = byte_range(range_, st.st_size)
        except HTTPException:
            file.close()
            raise
        if span is None:
            headers["Content-Length"] = str(st.st_size)
            body = _read(file, st.st_size)
            return StreamingResponse(body, media_type=media_type(row.path), headers=headers)
        start, end = span
        headers["Content-Length"] = str(end - start + 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{st.st_size}"
        body = read_span(file, start, end - start + 1)
        return StreamingResponse(body, 206, media_type=media_type(row.path), headers=headers)

    @app.get("/thumbnails/{image_id}")
    async def get_thumbnail(image_id: ImageId) -> Response:
        """A JPEG thumbnail of an indexed image (same checks as ``/images``)."""
        data = await pool.run(thumbnails.get, indexed_row(image_id), state.roots)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("clipforge.serve").joinpath("static/index.html").read_text("utf-8")
