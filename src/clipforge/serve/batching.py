"""Dynamic batching of concurrent text queries through the text tower, with an LRU cache."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class TextBatcher:
    """Collects texts arriving within ``wait_s`` into one ``encode`` call; caches results.

    ``encode(texts) -> (len(texts), dim)`` runs in one dedicated worker thread, so the event
    loop keeps accepting requests while the model works; those that arrive meanwhile form
    the next batch (under load, batches grow to what arrives during one forward pass).
    """

    def __init__(
        self,
        encode: Callable[[list[str]], np.ndarray],
        *,
        max_batch: int = 64,
        wait_s: float = 0.002,
        cache_size: int = 4096,
    ) -> None:
        self.encode = encode
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.cache_size = cache_size
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.pending: dict[str, asyncio.Future] = {}  # queued or being encoded
        self.queue: list[str] = []  # waiting for the next batch
        self.task: asyncio.Task | None = None
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="clipforge-text")
        self.requests = 0
        self.batches = 0
        self.encoded = 0
        self.hits = 0
        self.joined = 0

    async def embed(self, text: str) -> np.ndarray:
        """The embedding of ``text`` (from the cache, or from the next batch)."""
        self.requests += 1
        vector = self.cache.get(text)
        if vector is not None:
            self.cache.move_to_end(text)
            self.hits += 1
            return vector
        future = self.pending.get(text)
        if future is not None:  # the same text is already queued or being encoded
            self.joined += 1
        else:
            future = asyncio.get_running_loop().create_future()
            self.pending[text] = future
            self.queue.append(text)
            if self.task is None or self.task.done():
                self.task = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        await asyncio.sleep(self.wait_s)  # the window in which concurrent queries gather
        loop = asyncio.get_running_loop()
        while self.queue:
            texts, self.queue = self.queue[: self.max_batch], self.queue[self.max_batch :]
            try:
                vectors = await loop.run_in_executor(self.worker, self.encode, texts)
            except Exception as exc:  # every waiter gets the error
                for text in texts:
                    self.pending.pop(text).set_exception(exc)
                continue
            self.batches += 1
            self.encoded += len(texts)
            for text, vector in zip(texts, vectors, strict=True):
                self._remember(text, vector)
                self.pending.pop(text).set_result(vector)

    def _remember(self, text: str, vector: np.ndarray) -> None:
        self.cache[text] = vector
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def stats(self) -> dict:
        """Counters: texts asked for, forward batches, texts encoded, cache hits, texts that
        joined an identical one already queued or being encoded."""
        return {
            "requests": self.requests,
            "batches": self.batches,
            "encoded": self.encoded,
            "cache_hits": self.hits,
            "joined": self.joined,
            "mean_batch": round(self.encoded / self.batches, 2) if self.batches else 0.0,
            "hit_rate": round(self.hits / self.requests, 3) if self.requests else 0.0,
        }
