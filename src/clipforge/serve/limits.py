"""Request limits of the service: bounded query parameters and a bounded decode pool.

Every number a client sends is bounded and finite (pydantic constraints), so hostile values
(ids >= 2^63, ``nan``/``inf`` times, widths of 1e30) are answered 422 before they reach
SQLite or numpy. Image decodes run in a fixed pool of worker threads; requests beyond the
pool wait in a bounded queue for a bounded time, and are answered 503 beyond that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, HTTPException, Path, Query

from ..index import Filters

MAX_ID = 2**63 - 1
"""Largest image id (SQLite INTEGER)."""
MAX_K = 10_000
"""Largest ``k`` accepted at all (422 above); the service also clamps to ``ServeConfig.max_k``."""
MAX_QUERY_CHARS = 1000
MAX_GLOB_CHARS = 256
MAX_NEGATIVES = 16
"""Negative prompts per request (each costs a text-tower pass)."""
MAX_UNIX_TIME = 9.2e9
"""|after|, |before| bound in Unix seconds: nanoseconds must fit SQLite's 64-bit INTEGER."""
MAX_SIDE = 1_000_000
"""Largest ``min_width`` / ``min_height``."""
MAX_WEIGHT = 100.0
"""Largest |text_weight|."""

ImageId = Annotated[int, Path(ge=1, le=MAX_ID, description="An indexed image's id.")]
QueryText = Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)]
Negatives = Annotated[
    list[Annotated[str, Query(max_length=MAX_QUERY_CHARS)]] | None,
    Query(max_length=MAX_NEGATIVES, description=f"At most {MAX_NEGATIVES} negative prompts."),
]
TextWeight = Annotated[
    float, Query(ge=-MAX_WEIGHT, le=MAX_WEIGHT, allow_inf_nan=False, description="Finite.")
]
_Time = Annotated[
    float | None,
    Query(ge=-MAX_UNIX_TIME, le=MAX_UNIX_TIME, allow_inf_nan=False, description="Unix time."),
]
_Side = Annotated[int | None, Query(ge=0, le=MAX_SIDE)]

T = TypeVar("T")
_When = Annotated[
    str | None,
    Query(max_length=40, description="Capture date, ISO 8601 (zone-less: the photo's clock)."),
]


_Near = Annotated[str | None, Query(max_length=64, description="LAT,LON in degrees.")]
_Radius = Annotated[
    float | None, Query(gt=0.0, le=20_100.0, allow_inf_nan=False, description="For near.")
]
_Camera = Annotated[str | None, Query(max_length=128)]
_Sort = Annotated[Literal["score", "date", "date-asc"], Query()]


async def photo_params(
    taken_after: _When = None,
    taken_before: _When = None,
    near: _Near = None,
    radius_km: _Radius = None,
    camera: _Camera = None,
    sort: _Sort = "score",
) -> dict[str, Any]:
    """Capture date, place and camera filters and the result order
    (``clipforge.index.filters``). A coroutine, so FastAPI resolves it on the event loop:
    a class or plain-function dependency would take a worker thread per request."""
    return {"taken_after": taken_after, "taken_before": taken_before, "near": near,
            "radius_km": radius_km, "camera": camera, "sort": sort}  # fmt: skip


@dataclass
class FilterParams:
    """Query-string filters shared by the search endpoints."""

    k: int
    filters: Filters


async def filter_params(
    photo: Annotated[dict[str, Any], Depends(photo_params)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    glob: Annotated[str | None, Query(max_length=MAX_GLOB_CHARS)] = None,
    after: _Time = None,
    before: _Time = None,
    min_score: Annotated[
        float | Literal["auto"] | None,
        Query(description="Minimum cosine in [-1, 1], or 'auto' (per-query outlier cutoff)."),
    ] = None,
    min_width: _Side = None,
    min_height: _Side = None,
) -> FilterParams:
    """The filters of a search request (async: FastAPI runs it on the event loop, where a
    sync dependency would cost a worker-thread hop per request)."""
    if isinstance(min_score, float) and not -1.0 <= min_score <= 1.0:
        raise HTTPException(422, "min_score must be in [-1, 1] or 'auto'")
    filters = Filters(glob or None, after, before, min_width, min_height, min_score, **photo)
    return FilterParams(k, filters)


class DecodePool:
    """At most ``workers`` image decodes at once, in their own threads.

    Up to ``queue`` more requests wait (at most ``wait_s`` seconds each) for a worker;
    beyond that they are answered 503 at once, so concurrent uploads cannot multiply the
    memory one decode needs.
    """

    def __init__(self, workers: int, queue: int, wait_s: float) -> None:
        self.workers = max(1, workers)
        self.queue = max(0, queue)
        self.wait_s = wait_s
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="clipforge-decode")
        self.slots = asyncio.Semaphore(self.workers)
        self.waiting = 0
        self.refused = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a decode worker, once one is free (503 if none frees in time)."""
        if self.slots.locked() and self.waiting >= self.queue:
            self.refused += 1
            raise _busy("too many images are being decoded; retry shortly")
        self.waiting += 1
        try:
            await asyncio.wait_for(self.slots.acquire(), self.wait_s)
        except TimeoutError:
            self.refused += 1
            raise _busy(f"no decode worker became free within {self.wait_s:g} s") from None
        finally:
            self.waiting -= 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.slots.release()

    def stats(self) -> dict:
        """Workers, requests waiting for one, requests refused as busy."""
        return {"workers": self.workers, "waiting": self.waiting, "refused": self.refused}

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _busy(detail: str) -> HTTPException:
    return HTTPException(503, detail, headers={"Retry-After": "1"})
