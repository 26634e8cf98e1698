"""Videos through the service: timestamped hits, content types, byte ranges, posters."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import clipforge
from clipforge.serve import ServeConfig, create_app
from tests.conftest import tiny_model
from tests.index_helpers import write_images
from tests.video_helpers import COLOURS, write_video

FPS = 10


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-video")
    write_images(root / "media", 6)
    starts = write_video(root / "media" / "clip.mp4", [(c, 12) for c in COLOURS], fps=FPS)
    write_video(root / "media" / "other.webm", [(COLOURS[0], 5)], fps=FPS)
    index = clipforge.Index.open(root / "db", tiny_model())
    report = index.sync([root / "media"])
    assert (report.added, report.videos, report.failed) == (8, 2, [])
    return index, starts, TestClient(create_app(index, ServeConfig()))


def _png(colour) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), colour, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _video_id(index, name: str) -> int:
    return next(
        i for i, p in index.meta.db.execute("SELECT id, path FROM images") if p.endswith(name)
    )


def test_hits_carry_the_timestamp_and_a_link_to_that_moment(served):
    index, starts, client = served
    files = {"file": ("q.png", _png(COLOURS[4]), "image/png")}
    results = client.post("/search/image", params={"k": 8}, files=files).json()["results"]
    top = results[0]
    assert top["path"].endswith("clip.mp4")
    assert top["timestamp"] == pytest.approx(starts[4], abs=0.2)
    assert top["video"] == f"/images/{top['id']}#t={top['timestamp']:.3f}"
    assert len({r["path"] for r in results}) == len(results) == 8  # each video once
    assert all("video" not in r for r in results if r["path"].endswith(".png"))
    text = client.get("/search", params={"q": "a yellow screen", "k": 8}).json()["results"]
    videos = [r for r in text if r["path"].endswith((".mp4", ".webm"))]
    assert len(videos) == 2 and all("timestamp" in r for r in videos)


def test_videos_are_served_with_their_type_and_byte_ranges(served):
    index, _, client = served
    mp4, webm = _video_id(index, "clip.mp4"), _video_id(index, "other.webm")
    data = Path(index.meta.get(mp4).path).read_bytes()
    whole = client.get(f"/images/{mp4}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    assert client.get(f"/images/{webm}").headers["content-type"] == "video/webm"

    part = client.get(f"/images/{mp4}", headers={"Range": "bytes=10-109"})
    assert part.status_code == 206 and part.content == data[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(data)}"
    assert part.headers["content-length"] == "100"
    tail = client.get(f"/images/{mp4}", headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == data[-7:]
    rest = client.get(f"/images/{mp4}", headers={"Range": f"bytes={len(data) - 3}-"})
    assert rest.content == data[-3:]
    past = client.get(f"/images/{mp4}", headers={"Range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
    for odd in ("bytes=5-2", "items=0-1", "bytes=0-1,4-5", "bytes=x-"):
        ignored = client.get(f"/images/{mp4}", headers={"Range": odd})
        assert ignored.status_code == 200 and ignored.content == data


def test_video_thumbnail_is_its_first_frame(served):
    index, _, client = served
    response = client.get(f"/thumbnails/{_video_id(index, 'clip.mp4')}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    pixels = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), float)
    assert np.abs(pixels.mean(axis=(0, 1)) - COLOURS[0]).max() < 20
