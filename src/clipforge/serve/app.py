"""The FastAPI application: search by text / image / indexed image, files by id, health.

Security defaults: only indexed files are served, by integer id (no paths in URLs), and only
while they are still the indexed regular file (``files``); request bodies are limited while
they are read, uploads in pixels before decoding, decodes by a bounded pool (``uploads``,
``limits``); every query number is bounded and finite; mutating endpoints answer 403 unless
an API key is configured (then they need ``X-API-Key``); re-indexing runs in a child
process (``jobs``); CORS is off unless origins are given. Errors the package raises on
purpose (:class:`~clipforge.errors.ClipforgeError`) are answered with their ``http_status``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import torch
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ..embedding import embed_texts
from ..errors import ClipforgeError
from ..index import Filters, Index
from ..index.fusion import OcrMode, hybrid_search, wants_text
from ..quantization import prepare_int8
from ..runtime import Precision, check_precision, resolve_precision
from .admin import add_admin_routes
from .batching import TextBatcher
from .explain import explain_router
from .files import add_file_routes, served_image_opener
from .jobs import Reindexer, ServiceState
from .limits import (
    DecodePool,
    FilterParams,
    ImageId,
    Negatives,
    QueryText,
    TextWeight,
    filter_params,
)
from .uploads import FORM_LIMITS, body_limit, check_upload, upload_vector

SMALL_BODY = 64 * 1024
"""Request body limit of every route but the upload (none of them takes a body)."""


@dataclass
class ServeConfig:
    """Service limits and switches.

    ``threads``: torch intra-op threads for the text tower (process-wide; ``None`` leaves
    torch's setting). ``precision``:
    ``"bf16"`` runs the text tower under bfloat16 autocast (faster on CPUs with bf16
    instructions; query vectors then differ slightly from fp32 ones), ``"int8"`` an int8
    copy of it (CPU), ``None``: the index's own precision (see ``Index.open``).
    ``decode_workers``: image decodes at once (uploads, thumbnails); ``decode_queue``
    requests wait up to ``decode_wait_s`` for one, more are answered 503. ``max_k``: larger
    ``k`` are clamped to it.
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
    precision: Precision | None = None
    decode_workers: int = 2
    decode_queue: int = 32
    decode_wait_s: float = 30.0


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)


class Searcher:
    """Runs index searches on the event loop while they are quick, else in a worker thread.

    A search costing under ``inline_s`` of CPU on average (approximate indexes: ~0.2 ms)
    costs less than the hop to a worker thread and back (which waits for a core on a busy
    machine); a slower one (exact search over many vectors, a wide filter) goes to a worker
    thread so the loop keeps accepting requests. Also a worker thread when the index is
    locked (re-indexing). The cost is the searching thread's CPU time, which preemption on a
    busy machine does not inflate.
    """

    def __init__(self, state: ServiceState, inline_s: float = 0.002) -> None:
        self.state = state
        self.inline_s = inline_s
        self.mean_s = 0.0  # moving average of the search's CPU time

    def _timed(self, index: Index, vectors: np.ndarray, k: int, filters: Filters) -> list:
        start = time.thread_time()
        hits = index.search_vectors(vectors, k, filters)
        self.mean_s = 0.8 * self.mean_s + 0.2 * (time.thread_time() - start)
        return hits

    async def __call__(self, vectors: np.ndarray, k: int, filters: Filters) -> list:
        index = self.state.index
        if self.mean_s < self.inline_s and index.lock.acquire(blocking=False):
            try:
                return self._timed(index, vectors, k, filters)
            finally:
                index.lock.release()
        return await run_in_threadpool(self._timed, index, vectors, k, filters)


def create_app(index: Index, config: ServeConfig | None = None) -> FastAPI:
    """A FastAPI app serving ``index`` (opened with its model)."""
    config = config or ServeConfig()
    check_precision(config.precision)
    if config.threads:
        set_threads(config.threads)
    _prepare_int8(index, config)
    state = ServiceState(index)
    state.update()
    jobs = Reindexer(state)
    pool = DecodePool(config.decode_workers, config.decode_queue, config.decode_wait_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await jobs.aclose()
        pool.close()

    app = FastAPI(
        title="clipforge search", version="1", lifespan=lifespan, max_body_size=SMALL_BODY
    )
    app.add_exception_handler(ClipforgeError, _clipforge_error)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"])
    batcher = TextBatcher(
        lambda texts: embed_texts(
            state.index.model, texts, batch_size=config.max_batch,
            precision=config.precision or state.index.precision,
        ),
        max_batch=config.max_batch,
        wait_s=config.batch_wait_s,
        cache_size=config.cache_size,
    )
    app.state.batcher, app.state.jobs, app.state.decode_pool = batcher, jobs, pool
    _add_health_route(app, state, batcher, pool)
    _add_search_routes(app, state, config, batcher, pool)
    add_file_routes(app, state, config, pool)
    add_admin_routes(app, state, config, jobs)
    app.include_router(explain_router(lambda: state.index, served_image_opener(state), pool.run))
    return app


def _prepare_int8(index: Index, config: ServeConfig) -> None:
    """At int8, make (and measure) the text tower's int8 copy now: not in the first batch of
    queries, which would wait seconds for it."""
    model = index.model
    if model is None:
        return
    device = next(model.parameters()).device
    if resolve_precision(config.precision or index.precision, device) == "int8":
        prepare_int8(model)


async def _clipforge_error(_: Request, exc: Exception) -> JSONResponse:
    """A ClipforgeError (refused file, locked index, ...): its HTTP status, one line."""
    return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "http_status", 400))


def _result(hit) -> dict:
    """A hit as the API answers it: its fields, the file and thumbnail URLs and, for a
    video, the URL that plays it from the matching moment."""
    out = {**hit.to_dict(), "image": f"/images/{hit.id}", "thumbnail": f"/thumbnails/{hit.id}"}
    if hit.timestamp is not None:
        out["video"] = f"/images/{hit.id}#t={hit.timestamp:.3f}"
    return out


def set_threads(threads: int) -> None:
    """Torch intra-op threads for the text tower (process-wide). FAISS already searches a
    single query on one thread (``FaissStore.search``)."""

    torch.set_num_threads(threads)


def _add_health_route(
    app: FastAPI, state: ServiceState, batcher: TextBatcher, pool: DecodePool
) -> None:
    @app.get("/health")
    async def health() -> dict:
        """Liveness and counts, from the service's state (never waits on the index)."""
        return {
            "status": "ok",
            **state.info,
            "reindex": app.state.jobs.status(),
            "decode": pool.stats(),
            "batching": batcher.stats(),
        }


def _add_search_routes(
    app: FastAPI, state: ServiceState, config: ServeConfig, batcher: TextBatcher, pool: DecodePool
) -> None:
    async def text_query(q: str, negative: list[str]) -> np.ndarray:
        vector = await batcher.embed(q)
        if negative:
            vectors = await asyncio.gather(*(batcher.embed(n) for n in negative))
            vector = _unit(vector) - 0.5 * _unit(np.mean(vectors, axis=0))
        return _unit(vector)

    searcher = Searcher(state)

    async def run_search(vector: np.ndarray, params: FilterParams) -> list[dict]:
        k = min(params.k, config.max_k)
        hits = await searcher(vector[None], k, params.filters)
        return [_result(h) for h in hits[0]]

    @app.get("/search")
    async def search_text(
        q: QueryText,
        params: Annotated[FilterParams, Depends(filter_params)],
        negative: Negatives = None,
        ocr: OcrMode = "auto",
    ) -> dict:
        """Images matching a text query (minus ``negative`` prompts); with recognised text
        in the index, fused with the text matches (``ocr``: auto, only, off)."""
        vector = await text_query(q, list(negative or []))
        has = state.info.get("ocr") is not None  # the index holds recognised text
        if wants_text(state.index, q, ocr, has):
            k = min(params.k, config.max_k)
            hits = await run_in_threadpool(
                hybrid_search, state.index, vector, q, k, params.filters, ocr, has
            )
            return {"query": q, "results": [_result(h) for h in hits]}
        return {"query": q, "results": await run_search(vector, params)}

    @app.get("/search/similar/{image_id}")
    async def search_similar(
        image_id: ImageId, params: Annotated[FilterParams, Depends(filter_params)]
    ) -> dict:
        """Images similar to an indexed image."""
        index = state.index
        with index.lock:
            _, vectors = index.meta.vectors(np.asarray([image_id], dtype=np.int64), 0)
        if len(vectors) == 0:
            raise HTTPException(404, "no indexed image with this id")
        return {"similar_to": image_id, "results": await run_search(vectors[0], params)}

    @app.post("/search/image", max_body_size=body_limit(config), form_limits=FORM_LIMITS)
    async def search_image(
        params: Annotated[FilterParams, Depends(filter_params)],
        file: Annotated[UploadFile, File(description="The query image")],
        q: Annotated[str | None, Query(max_length=1000)] = None,
        text_weight: TextWeight = 1.0,
    ) -> dict:
        """Images similar to an uploaded image (optionally mixed with a text query)."""
        check_upload(file, config)
        vector = await pool.run(upload_vector, state.index, file)
        if q:
            vector = _unit(vector + text_weight * await text_query(q, []))
        return {"query": q, "results": await run_search(vector, params)}
