"""Dynamic batching of concurrent text queries through the text tower, with an LRU cache."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class TextBatcher:
    """Collects texts arriving within ``wait_s`` into one ``encode`` call; caches results.

    ``encode(texts) -> (len(texts), dim)`` runs in a worker thread, so the event loop keeps
    accepting requests (which join the next batch) while the model works.
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
        self.pending: dict[str, asyncio.Future] = {}
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.encoded = 0
        self.hits = 0

    async def embed(self, text: str) -> np.ndarray:
        """The embedding of ``text`` (from the cache, or from the next batch)."""
        if text in self.cache:
            self.cache.move_to_end(text)
            self.hits += 1
            return self.cache[text]
        future = self.pending.get(text)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self.pending[text] = future
            if self.task is None or self.task.done():
                self.task = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        await asyncio.sleep(self.wait_s)  # the window in which concurrent queries gather
        while self.pending:
            texts = list(self.pending)[: self.max_batch]
            futures = [self.pending.pop(t) for t in texts]
            try:
                vectors = await asyncio.to_thread(self.encode, texts)
            except Exception as exc:  # every waiter gets the error
                for future in futures:
                    future.set_exception(exc)
                continue
            self.batches += 1
            self.encoded += len(texts)
            for text, future, vector in zip(texts, futures, vectors, strict=True):
                self._remember(text, vector)
                future.set_result(vector)

    def _remember(self, text: str, vector: np.ndarray) -> None:
        self.cache[text] = vector
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def stats(self) -> dict:
        return {"batches": self.batches, "encoded": self.encoded, "cache_hits": self.hits}
