"""Generated videos for the index tests: scenes of known frames, written with PyAV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

CODECS = {".mp4": "mpeg4", ".mov": "mpeg4", ".mkv": "mpeg4", ".webm": "libvpx"}

Scene = tuple[tuple[int, int, int] | np.ndarray, int]
"""A scene: a solid colour (or an ``(H, W, 3)`` picture) shown for this many frames."""


def write_video(
    path: Path, scenes: Sequence[Scene], fps: int = 10, size: tuple[int, int] = (64, 48)
) -> list[float]:
    """Write the scenes one after another; returns each scene's start time in seconds.

    A faint moving stripe keeps consecutive frames of a scene slightly different (like a
    real shot), well below the sampler's cut threshold."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    starts, frame_no = [], 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(CODECS[path.suffix.lower()], rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"} if stream.codec_context.name == "mpeg4" else {}
        stream.bit_rate = 2_000_000
        for picture, frames in scenes:
            starts.append(frame_no / fps)
            base = _picture(picture, size)
            for i in range(frames):
                pixels = base.copy()
                column = (frame_no * 3) % size[0]
                pixels[:, column : column + 2] = np.clip(
                    pixels[:, column : column + 2] + 12, 0, 255
                )
                frame = av.VideoFrame.from_ndarray(pixels.astype(np.uint8), format="rgb24")
                frame.pts = frame_no
                for packet in stream.encode(frame):
                    container.mux(packet)
                frame_no += 1
                del i
        for packet in stream.encode():
            container.mux(packet)
    return starts


def _picture(picture, size: tuple[int, int]) -> np.ndarray:
    if isinstance(picture, np.ndarray):
        return picture.astype(np.int16)
    return np.broadcast_to(np.asarray(picture, np.int16), (size[1], size[0], 3)).copy()


COLOURS: list[tuple[int, int, int]] = [
    (230, 30, 30), (30, 200, 40), (30, 40, 230), (240, 220, 20), (20, 20, 20), (200, 30, 210),
]  # fmt: skip
