"""Watch mode: keep an index current while files are added, changed, moved and deleted.

The watcher (``watchdog``: inotify on Linux, FSEvents on macOS, ...) only collects the paths
that events name; once no new event has come for ``debounce_s`` (or ``max_delay_s`` after
the first one, for a folder that never goes quiet) the batch goes through the ordinary
incremental indexer: :meth:`Index.add` for what exists (a moved file is found by its hash
and re-pointed, not re-embedded) and :meth:`Index.remove` for what is gone (a vanished
folder takes every indexed path under it). Every update holds the writer lock and commits
batch by batch, so a watcher killed at any moment leaves the index as consistent as an
interrupted ``clipforge index`` run; the next start syncs the folders once before watching,
which picks up whatever happened while it was down. Lost events (an overflowing kernel
queue) trigger the same full sync.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, UsageError
from .locking import IndexLockedError
from .scan import INDEXED_SUFFIXES, expand

if TYPE_CHECKING:
    from .index import Index
    from .report import IndexReport

WATCHDOG_MISSING = (
    "watch mode needs watchdog: pip install 'clipforge[watch]' (the `watchdog` package)"
)
IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})


class WatchDependencyError(InputError):
    """``watchdog`` is not installed."""


@dataclass(frozen=True)
class WatchOptions:
    """Timing of watch mode (seconds).

    Attributes:
        debounce_s: quiet time after the last event before a batch is indexed.
        max_delay_s: a batch is indexed at the latest this long after its first event.
        retry_s: wait before retrying a batch another writer's lock refused.
    """

    debounce_s: float = 0.5
    max_delay_s: float = 10.0
    retry_s: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.debounce_s <= self.max_delay_s) or self.retry_s <= 0:
            raise UsageError(
                "watch timing: need 0 < debounce_s <= max_delay_s and retry_s > 0, got "
                f"{self.debounce_s}, {self.max_delay_s}, {self.retry_s}"
            )


class ChangeCollector:
    """Paths named by file-system events, gathered until they go quiet (thread-safe)."""

    def __init__(self, ignore: Sequence[str] = ()) -> None:
        self.paths: set[str] = set()
        self.rescan = False
        self.first = self.last = 0.0
        self.ignore = tuple(os.path.join(os.path.realpath(p), "") for p in ignore)
        self.changed = threading.Condition()

    def dispatch(self, event: Any) -> None:
        """watchdog's handler entry point: note the paths of one event."""
        if event.event_type in IGNORED_EVENTS:
            return
        if event.event_type == "events_lost":
            self.note([], rescan=True)
            return
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        kept = [
            os.fsdecode(p)
            for p in paths
            if p and (event.is_directory or Path(os.fsdecode(p)).suffix.lower() in INDEXED_SUFFIXES)
        ]
        kept = [p for p in kept if not os.path.realpath(p).startswith(self.ignore)]
        if kept:
            self.note(kept)

    def note(self, paths: Sequence[str], rescan: bool = False) -> None:
        with self.changed:
            now = time.monotonic()
            if not self.paths and not self.rescan:
                self.first = now
            self.last = now
            self.paths.update(paths)
            self.rescan |= rescan
            self.changed.notify_all()

    def take(
        self, options: WatchOptions, stop: threading.Event, poll_s: float = 0.1
    ) -> tuple[set[str], bool]:
        """Wait for a quiet batch; ``(paths, rescan)`` (empty when ``stop`` was set)."""
        with self.changed:
            while not stop.is_set():
                if self.paths or self.rescan:
                    now = time.monotonic()
                    quiet = now - self.last >= options.debounce_s
                    if quiet or now - self.first >= options.max_delay_s:
                        batch, rescan = self.paths, self.rescan
                        self.paths, self.rescan = set(), False
                        return batch, rescan
                self.changed.wait(poll_s)
        return set(), False


def apply_changes(index: Index, paths: set[str], **add_options: Any) -> IndexReport:
    """Bring the index in line with the named paths: index what exists (folders expanded),
    forget what is gone (with everything indexed under a vanished folder)."""
    folders = sorted(p for p in paths if os.path.isdir(p))
    files = sorted(p for p in paths if os.path.lexists(p) and not os.path.isdir(p))
    gone = sorted(p for p in paths if not os.path.lexists(p))
    files = sorted(set(files) | set(expand(folders)))
    report = index.add(files, **add_options)  # first: a moved file is re-pointed by hash
    removed = list(gone)
    if gone or folders:
        present = set(files)
        under = tuple(os.path.join(p, "") for p in gone + folders)
        removed += [p for p in index.meta.states() if p.startswith(under) and p not in present]
    report.removed = index.remove(removed)
    return report


def watch(
    index: Index,
    roots: Sequence[str | os.PathLike],
    *,
    options: WatchOptions | None = None,
    on_update: Callable[[IndexReport], None] | None = None,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    **add_options: Any,
) -> None:
    """Sync ``roots`` once, then keep the index current until ``stop`` is set or Ctrl-C.

    ``on_update`` gets each update's report (the first sync's too); ``ready`` is set once
    the watcher runs. The first Ctrl-C (SIGINT, in the main thread) stops after the update
    in progress; a second one interrupts it (the index stays consistent either way).
    ``add_options``: passed to :meth:`Index.add` / :meth:`Index.sync`.
    """
    observer_class = _observer_class()
    options = options or WatchOptions()
    stop = stop or threading.Event()
    roots = [str(Path(r).absolute()) for r in roots]
    collector = ChangeCollector(ignore=[str(index.path)])
    observer = observer_class()
    for root in roots:
        if not os.path.isdir(root):
            raise UsageError(f"{root}: watch mode watches folders; this is not one")
        observer.schedule(collector, root, recursive=True)
    restore = _stop_on_sigint(stop)
    observer.start()  # before the first sync: nothing that happens during it is missed
    try:
        _report(on_update, index.sync(roots, **add_options))
        if ready is not None:
            ready.set()
        while not stop.is_set():
            paths, rescan = collector.take(options, stop)
            if not paths and not rescan:
                continue
            try:
                report = index.sync(roots, **add_options) if rescan else None
                report = apply_changes(index, paths, **add_options) if paths else report
            except IndexLockedError:
                collector.note(sorted(paths), rescan)  # another writer: retry the batch
                stop.wait(options.retry_s)
                continue
            _report(on_update, report)
    finally:
        restore()
        observer.stop()
        observer.join()


def _report(on_update: Callable[[IndexReport], None] | None, report: IndexReport | None) -> None:
    if on_update is not None and report is not None:
        on_update(report)


def _observer_class() -> Any:
    try:
        from watchdog.observers import Observer
    except ImportError as exc:
        raise WatchDependencyError(WATCHDOG_MISSING) from exc
    return Observer


def _stop_on_sigint(stop: threading.Event) -> Callable[[], None]:
    """First SIGINT: set ``stop``; the next one raises KeyboardInterrupt. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore
