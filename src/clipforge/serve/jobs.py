"""Long index work off the event loop: re-indexing runs in a child process.

The child (spawned, at lower CPU priority) opens the index directory with the service's
model and runs :meth:`Index.sync` over the recorded roots; the service keeps answering
``/health``, searches and files from its own open index meanwhile, and reopens the index
when the child is done. :meth:`Reindexer.stop` (SIGTERM, shutdown) terminates the child at
once; the index is crash-safe, so a stopped re-index leaves it consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from ..api import load_spec
from ..errors import ClipforgeError
from ..index import Index
from ..runtime import resolve_device

CHILD_NICE = 10


@dataclass
class ServiceState:
    """The index the service answers from, and what ``/health`` reports about it.

    ``owned``: the service opened this index itself (after a re-index) and closes it when
    it opens the next one; an index given to :func:`create_app` is never closed.
    """

    index: Index
    owned: bool = False
    info: dict = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)

    def update(self) -> None:
        """Re-read the counts and roots (under the index lock; call from a worker thread)."""
        with self.index.lock:
            self.info = self.index.info()
            self.roots = self.index.roots

    def reopen(self) -> None:
        """Open the index directory again (after another process wrote it) and switch to it."""
        old = self.index
        fresh = Index.open(old.path)  # the model was checked against this index already:
        fresh.model = old.model  # skip fingerprinting its weights again
        self.index = fresh
        if self.owned:
            with old.lock:
                old.close()
        self.owned = True
        self.update()


class ReindexRunning(ClipforgeError):
    """A re-index is already running."""

    http_status = 409


class Reindexer:
    """Runs one re-index at a time in a child process; see the module docstring."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.process: Any = None
        self.task: asyncio.Task | None = None
        self.started_at: float | None = None
        self.last: dict | None = None
        self.stopping = False

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def status(self) -> dict:
        """For ``/health``: whether a re-index runs, since when, and the last outcome."""
        return {"running": self.running, "started_at": self.started_at, "last": self.last}

    def start(self) -> asyncio.Task:
        """Start a re-index (409 if one runs; 503 while shutting down)."""
        if self.stopping:
            raise HTTPException(503, "the service is shutting down")
        if self.running:
            raise ReindexRunning(f"a re-index is already running (since {self.started_at:.0f})")
        self.started_at = time.time()
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.task.add_done_callback(self._finished)
        return self.task

    async def _run(self) -> dict:
        index = self.state.index
        model = await asyncio.to_thread(_model_source, index)
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=_reindex_child,
            args=(str(index.path), model, index.roots, sender),
            name="clipforge-reindex",
            daemon=True,
        )
        try:
            await asyncio.to_thread(self.process.start)
            sender.close()
            if self.stopping:  # stop() came while the child was starting
                self.process.terminate()
            outcome = await asyncio.to_thread(_receive, receiver)
        finally:
            receiver.close()
            await asyncio.to_thread(self.process.join, 10)
        if outcome is None:
            why = "the service is shutting down" if self.stopping else "its process died"
            raise HTTPException(
                503, f"re-index stopped: {why} (exit code {self.process.exitcode}); run it again"
            )
        if not outcome["ok"]:
            raise HTTPException(outcome["status"], outcome["error"])
        await asyncio.to_thread(self.state.reopen)
        return outcome["report"]

    def _finished(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self.last = {"error": "cancelled"}
        elif (exc := task.exception()) is not None:
            self.last = {"error": getattr(exc, "detail", None) or str(exc)}
        else:
            self.last = {"report": task.result()}

    def stop(self) -> None:
        """Terminate a running re-index now (safe to call from a signal handler)."""
        self.stopping = True
        process = self.process
        if process is not None and process.exitcode is None and process.pid is not None:
            process.terminate()

    async def aclose(self) -> None:
        """Stop and wait for the child (lifespan shutdown)."""
        self.stop()
        if self.task is not None:
            await asyncio.wait([self.task], timeout=10)


def _receive(receiver) -> dict | None:
    try:
        return receiver.recv()
    except (EOFError, OSError):
        return None


def _model_source(index: Index) -> dict | bytes:
    """How the child gets the model: the spec the index records (``clipforge index`` /
    ``serve`` record one), else a pickled copy of the service's model (library use).

    Never multiprocessing's own pickler: it moves tensors to shared memory in place, under
    the threads that are using them (a crash). A plain pickle copies the weights, holding
    the GIL while it does (a pause of the service for large models).
    """
    spec = index.model_spec
    if spec and spec.get("model"):
        return spec
    return pickle.dumps(index.model, pickle.HIGHEST_PROTOCOL)


def _load_model(source: dict | bytes):
    if isinstance(source, bytes):
        return pickle.loads(source)  # the parent's own model, through a private pipe
    weights = source.get("weights")
    spec_model = load_spec(source["model"], weights and Path(weights), source.get("pretrained"))
    return spec_model.to(resolve_device())


def _reindex_child(path: str, model: dict | bytes, roots: list[str], sender) -> None:
    """In the child process: sync the index, send back the report or a typed error.
    ``model``: see :func:`_model_source`; the index refuses a model that differs."""
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICE)
    try:
        with Index.open(path, _load_model(model)) as index:
            report = index.sync(roots, progress=False)
        sender.send({"ok": True, "report": report.to_dict()})
    except ClipforgeError as exc:
        sender.send({"ok": False, "status": exc.http_status, "error": str(exc)})
    except Exception as exc:  # a bug: reported, not hidden
        sender.send({"ok": False, "status": 500, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        sender.close()
