"""The FastAPI application: search by text / image / indexed image, files by id, health.

Security defaults: only indexed files are served, by integer id (no paths in URLs);
uploads are limited in bytes and pixels; mutating endpoints answer 403 unless an API key
is configured (then they need ``X-API-Key``); CORS is off unless origins are given.
"""

from __future__ import annotations

import io
import secrets
import time
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, File, Header, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response
from PIL import Image

from ..embedding import embed_texts
from ..index import Filters, Index
from ..index.querying import image_vector
from ..runtime import check_precision
from .batching import TextBatcher
from .explain import explain_router


@dataclass
class ServeConfig:
    """Service limits and switches.

    ``threads``: torch intra-op threads for the text tower (process-wide; ``None`` leaves
    torch's setting). ``precision``:
    ``"bf16"`` runs the text tower under bfloat16 autocast (faster on CPUs with bf16
    instructions; query vectors then differ slightly from fp32 ones), ``None``: fp32.
    """

    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 40_000_000
    max_k: int = 500
    batch_wait_s: float = 0.002
    max_batch: int = 64
    cache_size: int = 4096
    thumbnail_px: int = 256
    threads: int | None = None
    precision: str | None = None


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)


@dataclass
class FilterParams:
    """Query-string filters shared by the search endpoints."""

    k: int
    filters: Filters


async def filter_params(
    k: Annotated[int, Query(ge=1)] = 20,
    glob: str | None = None,
    after: float | None = Query(None, description="Unix time: modified at/after"),
    before: float | None = Query(None, description="Unix time: modified at/before"),
    min_score: float | None = None,
    min_width: Annotated[int | None, Query(ge=0)] = None,
    min_height: Annotated[int | None, Query(ge=0)] = None,
) -> FilterParams:
    """The filters of a search request (async: FastAPI runs it on the event loop, where a
    sync dependency would cost a worker-thread hop per request)."""
    return FilterParams(k, Filters(glob or None, after, before, min_width, min_height, min_score))


class Searcher:
    """Runs index searches on the event loop while they are quick, else in a worker thread.

    A search costing under ``inline_s`` of CPU on average (approximate indexes: ~0.2 ms)
    costs less than the hop to a worker thread and back (which waits for a core on a busy
    machine); a slower one (exact search over many vectors, a wide filter) goes to a worker
    thread so the loop keeps accepting requests. Also a worker thread when the index is
    locked (re-indexing). The cost is the searching thread's CPU time, which preemption on a
    busy machine does not inflate.
    """

    def __init__(self, index: Index, inline_s: float = 0.002) -> None:
        self.index = index
        self.inline_s = inline_s
        self.mean_s = 0.0  # moving average of the search's CPU time

    def _timed(self, vectors: np.ndarray, k: int, filters: Filters) -> list:
        start = time.thread_time()
        hits = self.index.search_vectors(vectors, k, filters)
        self.mean_s = 0.8 * self.mean_s + 0.2 * (time.thread_time() - start)
        return hits

    async def __call__(self, vectors: np.ndarray, k: int, filters: Filters) -> list:
        if self.mean_s < self.inline_s and self.index.lock.acquire(blocking=False):
            try:
                return self._timed(vectors, k, filters)
            finally:
                self.index.lock.release()
        return await run_in_threadpool(self._timed, vectors, k, filters)


def create_app(index: Index, config: ServeConfig | None = None) -> FastAPI:
    """A FastAPI app serving ``index`` (opened with its model)."""
    config = config or ServeConfig()
    check_precision(config.precision)
    if config.threads:
        set_threads(config.threads)
    app = FastAPI(title="clipforge search", version="1")
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"])
    batcher = TextBatcher(
        lambda texts: embed_texts(
            index.model, texts, batch_size=config.max_batch, precision=config.precision
        ),
        max_batch=config.max_batch,
        wait_s=config.batch_wait_s,
        cache_size=config.cache_size,
    )
    app.state.batcher = batcher
    _add_search_routes(app, index, config, batcher)
    _add_file_routes(app, index, config)
    _add_admin_routes(app, index, config)
    app.include_router(explain_router(index))
    return app


def set_threads(threads: int) -> None:
    """Torch intra-op threads for the text tower (process-wide). FAISS already searches a
    single query on one thread (``FaissStore.search``)."""
    import torch

    torch.set_num_threads(threads)


def _add_search_routes(
    app: FastAPI, index: Index, config: ServeConfig, batcher: TextBatcher
) -> None:
    async def text_query(q: str, negative: list[str]) -> np.ndarray:
        vector = await batcher.embed(q)
        if negative:
            vectors = [await batcher.embed(n) for n in negative]
            vector = _unit(vector) - 0.5 * _unit(np.mean(vectors, axis=0))
        return _unit(vector)

    searcher = Searcher(index)

    async def run_search(vector: np.ndarray, params: FilterParams) -> list[dict]:
        k = min(params.k, config.max_k)
        hits = await searcher(vector[None], k, params.filters)
        return [
            {**h.to_dict(), "image": f"/images/{h.id}", "thumbnail": f"/thumbnails/{h.id}"}
            for h in hits[0]
        ]

    @app.get("/health")
    def health() -> dict:
        with index.lock:
            info = index.info()
        return {"status": "ok", **info, "batching": batcher.stats()}

    @app.get("/search")
    async def search_text(
        q: Annotated[str, Query(min_length=1, max_length=1000)],
        params: Annotated[FilterParams, Depends(filter_params)],
        negative: Annotated[list[str] | None, Query()] = None,
    ) -> dict:
        """Images matching a text query (minus ``negative`` prompts)."""
        return {"query": q, "results": await run_search(await text_query(q, negative), params)}

    @app.get("/search/similar/{image_id}")
    async def search_similar(
        image_id: int, params: Annotated[FilterParams, Depends(filter_params)]
    ) -> dict:
        """Images similar to an indexed image."""
        with index.lock:
            _, vectors = index.meta.vectors([image_id], 0)
        if len(vectors) == 0:
            raise HTTPException(404, "no indexed image with this id")
        return {"similar_to": image_id, "results": await run_search(vectors[0], params)}

    @app.post("/search/image")
    async def search_image(
        request: Request,
        params: Annotated[FilterParams, Depends(filter_params)],
        file: Annotated[UploadFile, File(description="The query image")],
        q: Annotated[str | None, Query(max_length=1000)] = None,
        text_weight: float = 1.0,
    ) -> dict:
        """Images similar to an uploaded image (optionally mixed with a text query)."""
        data = await _read_upload(request, file, config)
        vector = await run_in_threadpool(_upload_vector, index, data, config)
        if q:
            vector = _unit(vector + text_weight * await text_query(q, []))
        return {"query": q, "results": await run_search(vector, params)}


async def _read_upload(request: Request, file: UploadFile, config: ServeConfig) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > config.max_upload_bytes + 64 * 1024:
        raise HTTPException(413, f"upload larger than {config.max_upload_bytes} bytes")
    data = await file.read(config.max_upload_bytes + 1)
    if len(data) > config.max_upload_bytes:
        raise HTTPException(413, f"upload larger than {config.max_upload_bytes} bytes")
    if not data:
        raise HTTPException(400, "empty upload")
    return data


def _upload_vector(index: Index, data: bytes, config: ServeConfig) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = image.width * image.height
    except Exception as exc:
        raise HTTPException(400, "the upload is not a recognised image") from exc
    if pixels > config.max_upload_pixels:
        raise HTTPException(
            413, f"image has {pixels} pixels; the limit is {config.max_upload_pixels}"
        )
    try:
        return image_vector(index.model, data)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


def _add_file_routes(app: FastAPI, index: Index, config: ServeConfig) -> None:
    def indexed_path(image_id: int) -> tuple[str, int]:
        with index.lock:
            row = index.meta.get(image_id)
        if row is None:
            raise HTTPException(404, "no indexed image with this id")
        return row.path, row.mtime_ns

    @lru_cache(maxsize=2048)
    def thumbnail(path: str, mtime_ns: int) -> bytes:
        from ..preprocess import load_image

        image = load_image(path)
        image.thumbnail((config.thumbnail_px, config.thumbnail_px))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=85)
        return out.getvalue()

    @app.get("/images/{image_id}")
    def get_image(image_id: int) -> FileResponse:
        """The original file of an indexed image (by id only)."""
        path, _ = indexed_path(image_id)
        try:
            return FileResponse(path)
        except OSError as exc:
            raise HTTPException(404, "file no longer readable") from exc

    @app.get("/thumbnails/{image_id}")
    def get_thumbnail(image_id: int) -> Response:
        """A JPEG thumbnail of an indexed image."""
        try:
            data = thumbnail(*indexed_path(image_id))
        except ValueError as exc:
            raise HTTPException(404, "file no longer readable") from exc
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files(__package__).joinpath("static/index.html").read_text("utf-8")


def _add_admin_routes(app: FastAPI, index: Index, config: ServeConfig) -> None:
    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if config.api_key is None:
            raise HTTPException(403, "mutating endpoints are disabled (no API key configured)")
        if x_api_key is None or not secrets.compare_digest(x_api_key, config.api_key):
            raise HTTPException(401, "missing or wrong X-API-Key")

    @app.delete("/images/{image_id}", dependencies=[Depends(require_key)])
    def delete_image(image_id: int) -> dict:
        """Remove an image from the index (the file itself is left alone)."""
        with index.lock:
            row = index.meta.get(image_id)
            if row is None:
                raise HTTPException(404, "no indexed image with this id")
            return {"removed": index.remove([row.path])}

    @app.post("/reindex", dependencies=[Depends(require_key)])
    def reindex() -> dict:
        """Re-index the folders given to ``clipforge index`` (new, changed, deleted files)."""
        return index.sync(index.roots, progress=False).to_dict()
