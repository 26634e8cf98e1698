"""Videos in the index: frames sampled at scene changes, each searchable with its timestamp.

Sampling (:class:`VideoSampling`) decodes every frame with PyAV (``pip install
'clipforge[video]'``, the ``av`` package) and measures its *change*: the mean absolute
difference from the previous frame of a 16x16 RGB downscale (FFmpeg's area filter; 768
values on the 0-255 scale). A frame is sampled when

- it is the first frame;
- its change is at least ``scene_threshold`` (a hard cut between different shots);
- its change is at least ``min_change`` and ``adaptive_ratio`` times the mean change of the
  ``adaptive_window`` frames before it plus 0.5 (a spike against the recent motion: a cut
  between similar-looking shots, as in PySceneDetect's adaptive detector); or
- ``max_interval_s`` seconds have passed since the last sample (slow changes, fades);

and a sampled frame is dropped when its mean absolute difference from the last *kept*
frame is below ``duplicate_threshold`` (a static shot, or a cut back to the same picture).
The kept frames are embedded like images; the first becomes the video's ``images`` row,
the others ``frames`` rows (:mod:`.frames`). Searches return each video once, at its best
frame.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..embedding import embed_images
from ..errors import InputError, UsageError
from ..models.protocols import ClipModel
from . import frames
from .metadata import ImageRow

if TYPE_CHECKING:
    from .index import Index, _Pending
    from .report import IndexReport

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm"})
VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
}
"""Content types of the video files served (the system's table may lack some)."""

AV_MISSING = "video support needs PyAV: pip install 'clipforge[video]' (the `av` package)"


class VideoDependencyError(InputError):
    """PyAV (the ``av`` package) is not installed."""

    http_status = 501


class VideoDecodeError(InputError):
    """A video file could not be decoded."""

    http_status = 422


@dataclass(frozen=True)
class VideoSampling:
    """Which frames of a video are indexed (module docstring: the measure).

    Attributes:
        scene_threshold: a change (mean absolute difference, 0-255, of consecutive 16x16
            RGB frames) this large is always a scene change.
        adaptive_ratio, adaptive_window, min_change: a change of at least ``min_change``
            and ``adaptive_ratio`` times the mean of the previous ``adaptive_window``
            changes (plus 0.5) is a scene change too.
        max_interval_s: the longest stretch of video without a sampled frame.
        duplicate_threshold: a sampled frame this close to the last kept one is dropped.
        max_frames: at most this many frames per video (the first ones are kept).
    """

    scene_threshold: float = 24.0
    adaptive_ratio: float = 3.0
    adaptive_window: int = 16
    min_change: float = 2.0
    max_interval_s: float = 10.0
    duplicate_threshold: float = 2.0
    max_frames: int = 20_000

    def __post_init__(self) -> None:
        checks = {
            "scene_threshold": 0 < self.scene_threshold <= 255,
            "adaptive_ratio": self.adaptive_ratio > 1,
            "adaptive_window": self.adaptive_window >= 1,
            "min_change": 0 <= self.min_change <= 255,
            "max_interval_s": self.max_interval_s > 0,
            "duplicate_threshold": 0 <= self.duplicate_threshold <= 255,
            "max_frames": self.max_frames >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise UsageError(f"VideoSampling.{name}: out of range ({getattr(self, name)!r})")


def is_video(path: str) -> bool:
    """Whether ``path`` has a video suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def require_av() -> Any:
    """The ``av`` module, or :class:`VideoDependencyError` naming the package."""
    try:
        import av
    except ImportError as exc:
        raise VideoDependencyError(AV_MISSING) from exc
    return av


def _small(frame: Any) -> np.ndarray:
    """The 16x16 RGB area-downscale compared between frames (int16, for differences)."""
    return frame.reformat(16, 16, "rgb24", interpolation="AREA").to_ndarray().astype(np.int16)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


class _CutDetector:
    """Scene changes: a large change, or a spike against the recent changes."""

    def __init__(self, options: VideoSampling) -> None:
        self.options = options
        self.previous: np.ndarray | None = None
        self.recent: deque[float] = deque(maxlen=options.adaptive_window)

    def is_cut(self, small: np.ndarray) -> bool:
        previous, self.previous = self.previous, small
        if previous is None:
            return False
        change, o = _difference(small, previous), self.options
        spike = bool(self.recent) and change >= o.adaptive_ratio * (np.mean(self.recent) + 0.5)
        self.recent.append(change)
        return change >= o.scene_threshold or (change >= o.min_change and spike)


@dataclass
class SampledVideo:
    """What :func:`sample_frames` found besides the frames: size and duration."""

    width: int = 0
    height: int = 0
    duration: float = 0.0
    decoded: int = 0


def sample_frames(
    source: Any, options: VideoSampling, info: SampledVideo | None = None
) -> Iterator[tuple[float, Image.Image]]:
    """``(timestamp in seconds, RGB image)`` of the sampled frames of a video file (a
    path or a binary file object); ``info`` is filled in as decoding goes."""
    av = require_av()
    info = info if info is not None else SampledVideo()
    with av.open(source) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{source}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or 25)
        info.width, info.height = stream.codec_context.width, stream.codec_context.height
        cuts = _CutDetector(options)
        kept = None
        last = -np.inf
        count = 0
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else info.decoded / rate
            info.decoded += 1
            info.duration = max(info.duration, t + 1 / rate)
            small = _small(frame)
            cut = cuts.is_cut(small)
            if kept is not None and not cut and t - last < options.max_interval_s:
                continue
            last = t
            if kept is not None and _difference(small, kept) < options.duplicate_threshold:
                continue
            kept = small
            yield t, frame.to_image()
            count += 1
            if count >= options.max_frames:
                break


def poster(source: Any) -> Image.Image:
    """The first frame of a video (path or binary file object), for thumbnails."""
    try:
        for _, image in sample_frames(source, VideoSampling(max_frames=1)):
            return image
    except (require_av().error.FFmpegError, OSError, ValueError) as exc:
        raise VideoDecodeError(f"cannot decode video: {exc}") from exc
    raise VideoDecodeError("cannot decode video: no frames")


def embed_video(
    model: ClipModel, path: str, options: VideoSampling, batch_size: int = 32
) -> tuple[list[float], np.ndarray, SampledVideo]:
    """Timestamps and normalised embeddings of a video's sampled frames."""
    info = SampledVideo()
    times: list[float] = []
    chunks: list[np.ndarray] = []
    batch: list[Image.Image] = []

    def flush() -> None:
        if batch:
            chunks.append(embed_images(model, batch, batch_size=len(batch)).embeddings)
            batch.clear()

    for t, image in sample_frames(path, options, info):
        times.append(t)
        batch.append(image)
        if len(batch) >= batch_size:
            flush()
    flush()
    dim = model.config.embed_dim
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return times, vectors, info


def index_videos(index: Index, items: list[_Pending], report: IndexReport, batch_size: int) -> None:
    """Embed and record the pending video files (one transaction each)."""
    if not items:
        return
    try:
        av = require_av()
    except VideoDependencyError as exc:
        _fail_all(index, items, str(exc), report)
        return
    for item in items:
        start = time.perf_counter()
        try:
            times, vectors, info = embed_video(
                index._require_model(), item.path, index.video_sampling, min(batch_size, 32)
            )
            if not times:
                raise VideoDecodeError("no frames could be decoded")
        except (av.error.FFmpegError, OSError, ValueError, VideoDecodeError) as exc:
            _fail_all(index, [item], f"cannot decode video: {exc}", report)
            continue
        _record(index, item, times, vectors, info, time.perf_counter() - start)
        report.added += item.old_id is None
        report.replaced += item.old_id is not None
        report.videos += 1
        report.video_seconds += info.duration
        report.video_index_seconds += time.perf_counter() - start


def _record(index: Index, item: _Pending, times, vectors, info: SampledVideo, seconds) -> None:
    meta = index.meta
    with meta.transaction():
        row = ImageRow(
            0, item.path, item.size, item.mtime_ns, item.sha256, info.width, info.height,
            *(item.identity or (None, None)),
        )  # fmt: skip
        image_id = meta.insert_image(row, vectors[0])
        ids = frames.insert_frames(meta.db, image_id, times, vectors, info.duration, seconds)
        meta.bump_version()
    index.store.remove(np.asarray([] if item.old_id is None else [item.old_id], np.int64))
    index.store.add(np.asarray([image_id, *ids], np.int64), vectors)


def _fail_all(index: Index, items: list[_Pending], reason: str, report: IndexReport) -> None:
    removed: list[int] = []
    with index.meta.transaction():
        for item in items:
            index._fail(item.path, item.size, item.mtime_ns, reason, report, removed)
        if removed:
            index.meta.bump_version()
    index.store.remove(np.asarray(removed, np.int64))
