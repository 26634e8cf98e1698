"""What one indexing run did (:class:`IndexReport`) and the files it plans to embed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IndexReport:
    """What one :meth:`Index.add` / :meth:`Index.sync` run did."""

    added: int = 0
    replaced: int = 0
    renamed: int = 0
    unchanged: int = 0
    duplicates: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    videos: int = 0  # videos embedded, their duration and the time it took (seconds)
    video_seconds: float = 0.0
    video_index_seconds: float = 0.0
    ocr_read: int = 0  # images read by text recognition (--ocr)
    ocr_failed: list[tuple[str, str]] = field(default_factory=list)
    ocr_seconds: float = 0.0

    @property
    def seconds_per_video_hour(self) -> float | None:
        """Indexing time per hour of video embedded in this run."""
        return self.video_index_seconds * 3600 / self.video_seconds if self.video_seconds else None

    def to_dict(self) -> dict:
        failures = {"failed": [list(f) for f in self.failed],
                    "ocr_failed": [list(f) for f in self.ocr_failed]}  # fmt: skip
        return self.__dict__ | failures | {"seconds_per_video_hour": self.seconds_per_video_hour}


@dataclass
class Pending:
    """A file the run will embed (its stat and hash; ``old_id``: the row it replaces)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    old_id: int | None = None
    identity: tuple[int, int] | None = None  # (device, inode) when planned
