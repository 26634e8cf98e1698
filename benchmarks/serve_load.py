"""Loopback load tests of ``clipforge serve``: closed- and open-loop, distinct or repeating
queries (used by ``benchmarks/search.py``).

* Closed loop: ``clients`` concurrent clients, each sending its next query when the last
  reply arrives. By Little's law, latency = clients / throughput: with 16 clients a p50 of
  25 ms needs ~640 queries/s, so this run measures throughput under saturation.
* Open loop: queries sent on a fixed schedule (Poisson arrivals at ``rate`` per second,
  seeded), whether or not earlier replies have come back; each latency is measured from the
  query's scheduled send time (no coordinated omission). This is the latency a service at
  that load actually gives.

Query streams, drawn from the Flickr captions (``captions.tsv``, 1,000 captions):

* ``distinct``: every query different (no cache can help). Past the 1,000 captions, lower-
  cased variants with a prefix ("a photo of ...", "an image of ...") keep them distinct.
* ``zipf``: queries drawn with replacement from the same pool of distinct queries, the
  caption of popularity rank ``r`` with probability proportional to ``1 / r**s``
  (``s = 1.0``, the shape of real query logs); repeats are what the query cache serves.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

MAX_CONNECTIONS = 64
"""Open-loop client connections (more in flight wait in the client, latency still counts)."""
PREFIXES = ("", "a photo of ", "an image of ", "a picture showing ", "a snapshot of ")


def distinct_queries(captions: list[str], n: int) -> list[str]:
    """``n`` different queries made from the captions (variants past the first pass)."""
    out: list[str] = []
    for round_ in range(n // len(captions) + 1):
        prefix = PREFIXES[round_ % len(PREFIXES)] + ("again " * (round_ // len(PREFIXES)))
        for caption in captions:
            text = caption.strip(" .")
            out.append(text if round_ == 0 else prefix + text[:1].lower() + text[1:])
    return out[:n]


def zipf_queries(captions: list[str], n: int, s: float = 1.0, seed: int = 0) -> list[str]:
    """``n`` queries drawn from the distinct pool with Zipf(``s``) popularity."""
    pool = distinct_queries(captions, max(n, len(captions)))
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(pool) + 1) ** s
    order = rng.permutation(len(pool))  # popularity is not the caption file's order
    picks = rng.choice(len(pool), n, p=weights / weights.sum())
    return [pool[order[i]] for i in picks]


@dataclass
class LoadResult:
    """What one load run measured (latencies in ms)."""

    latencies: list[float]
    errors: int
    elapsed: float
    short: int = 0

    def summary(self) -> str:
        lat = self.latencies or [float("nan")]
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        qps = len(self.latencies) / self.elapsed
        return (
            f"errors {self.errors}/{len(self.latencies)} (+{self.short} with < k results); "
            f"p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms; {qps:.1f} queries/s"
        )


async def _one(http, url: str, query: str, k: int) -> str:
    """``"ok"``, ``"short"`` (a 200 reply with fewer than ``k`` results) or ``"error"``."""
    import httpx

    try:
        reply = await http.get(url, params={"q": query, "k": k})
    except httpx.HTTPError:
        return "error"
    if reply.status_code != 200:
        return "error"
    return "ok" if len(reply.json()["results"]) == k else "short"


async def closed_loop(url: str, queries: list[str], clients: int, k: int = 20) -> LoadResult:
    """``clients`` concurrent clients, each sending its next query on the last reply."""
    import httpx

    latencies: list[float] = []
    outcomes: list[str] = []
    todo = iter(queries)

    async def client(http: httpx.AsyncClient) -> None:
        for query in todo:
            start = time.perf_counter()
            outcomes.append(await _one(http, url, query, k))
            latencies.append((time.perf_counter() - start) * 1000)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return LoadResult(latencies, outcomes.count("error"), elapsed, outcomes.count("short"))


async def open_loop(
    url: str, queries: list[str], rate: float, k: int = 20, seed: int = 0
) -> LoadResult:
    """Queries sent at Poisson arrival times of mean ``rate``/s, replies or not; latency
    counted from each query's scheduled time. The gaps are scaled so that the ``n`` arrivals
    span exactly ``n / rate`` seconds (a Poisson process given its count), so the offered
    load is ``rate``, not a sample's chance mean."""
    import httpx

    gaps = np.random.default_rng(seed).exponential(1.0 / rate, len(queries))
    gaps *= 1.0 / (rate * gaps.mean())  # the sample's mean rate is exactly ``rate``
    schedule = np.cumsum(gaps) - gaps[0]
    latencies: list[float] = []
    outcomes: list[str] = []

    async def send(http: httpx.AsyncClient, at: float, query: str) -> None:
        outcomes.append(await _one(http, url, query, k))
        latencies.append((time.perf_counter() - at) * 1000)

    limits = httpx.Limits(max_connections=MAX_CONNECTIONS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await _one(http, url, "warm up the connection pool", k)
        start = time.perf_counter()
        tasks = []
        for offset, query in zip(schedule.tolist(), queries, strict=True):
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(http, start + offset, query)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return LoadResult(latencies, outcomes.count("error"), elapsed, outcomes.count("short"))
