"""``GET /explain/{image_id}?q=...``: a "why this result" heat-map overlay (PNG) of where the
query matches an indexed image.

Images are looked up by integer id only, exactly as ``/images/{id}`` does (no paths in
URLs; unknown ids answer 404). ``open_image`` lets the service substitute its own opener
(e.g. one that re-checks the file's identity before reading it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from PIL import Image

from ..dense import DEFAULT_METHOD, METHODS, explain_png
from ..errors import ClipforgeError
from ..index import Index
from ..preprocess import load_image

ImageOpener = Callable[[int], Image.Image]
_METHOD_PATTERN = "^(" + "|".join(METHODS) + ")$"


def indexed_image_opener(index_of: Callable[[], Index]) -> ImageOpener:
    """Open an indexed image by id (404 if the id is unknown or the file unreadable)."""

    def open_image(image_id: int) -> Image.Image:
        index = index_of()
        with index.lock:
            row = index.meta.get(image_id)
        if row is None:
            raise HTTPException(404, "no indexed image with this id")
        try:
            return load_image(row.path)
        except (OSError, ValueError) as exc:
            raise HTTPException(404, "file no longer readable") from exc

    return open_image


def explain_router(
    index_of: Callable[[], Index],
    open_image: ImageOpener | None = None,
    run: Callable[..., Awaitable[bytes]] | None = None,
) -> APIRouter:
    """The router serving ``/explain/{image_id}`` with the model of ``index_of()`` (the
    service's current index). ``open_image``: how an id becomes an image; ``run``: where the
    rendering runs (the service's bounded worker pool; default: the thread pool)."""
    router = APIRouter()
    opener = open_image or indexed_image_opener(index_of)
    run_render = run or run_in_threadpool

    def render(image_id: int, q: str, method: str) -> bytes:
        image = opener(image_id)
        try:
            return explain_png(index_of().model, image, q, method=method)
        except ClipforgeError as exc:  # e.g. a ResNet image tower: no heat maps
            raise HTTPException(exc.http_status, str(exc)) from exc

    @router.get("/explain/{image_id}", response_class=Response)
    async def explain(
        image_id: int,
        q: Annotated[str, Query(min_length=1, max_length=1000)],
        method: Annotated[str, Query(pattern=_METHOD_PATTERN)] = DEFAULT_METHOD,
    ) -> Response:
        """A PNG overlay: where the text ``q`` matches indexed image ``image_id``."""
        data = await run_render(render, image_id, q, method)
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=600"})

    return router
