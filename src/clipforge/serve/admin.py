"""Mutating endpoints (``DELETE /images/{id}``, ``POST /reindex``): off unless an API key is
configured, then only with a matching ``X-API-Key`` header."""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse

from .limits import ImageId

if TYPE_CHECKING:
    from .app import ServeConfig
    from .jobs import Reindexer, ServiceState


def _key_bytes(text: str) -> bytes:
    """Header values arrive as latin-1 text; any string compares as UTF-8 bytes."""
    return text.encode("utf-8", "surrogateescape")


def add_admin_routes(
    app: FastAPI, state: ServiceState, config: ServeConfig, jobs: Reindexer
) -> None:
    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if config.api_key is None:
            raise HTTPException(403, "mutating endpoints are disabled (no API key configured)")
        if x_api_key is None or not hmac.compare_digest(
            _key_bytes(x_api_key), _key_bytes(config.api_key)
        ):
            raise HTTPException(401, "missing or wrong X-API-Key")

    @app.delete("/images/{image_id}", dependencies=[Depends(require_key)])
    def delete_image(image_id: ImageId) -> dict:
        """Remove an image from the index (the file itself is left alone)."""
        if jobs.running:
            raise HTTPException(409, "a re-index is running; retry when it is done")
        index = state.index
        with index.lock:
            row = index.meta.get(image_id)
            if row is None:
                raise HTTPException(404, "no indexed image with this id")
            removed = index.remove([row.path])
        state.update()
        return {"removed": removed}

    @app.post("/reindex", dependencies=[Depends(require_key)], response_model=None)
    async def reindex(wait: bool = True) -> dict | JSONResponse:
        """Re-index the folders given to ``clipforge index`` (new, changed, deleted files) in
        a child process. ``wait=false``: answer 202 at once (``/health`` shows progress)."""
        task = jobs.start()
        if not wait:
            return JSONResponse({"status": "started"}, status_code=202)
        return await asyncio.shield(task)
