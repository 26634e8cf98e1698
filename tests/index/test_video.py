"""Videos in the index: scene-change sampling, frames with timestamps, grouped results."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.index import Filters, IndexRepairedWarning
from clipforge.index.video import AV_MISSING, SampledVideo, VideoSampling, sample_frames
from tests.conftest import tiny_model
from tests.index_helpers import write_images
from tests.video_helpers import COLOURS, write_video

FPS = 10
FRAME = 1 / FPS
LENGTHS = [25, 13, 40, 7, 150, 9]  # frames per scene; the 5th is a 15 s static shot


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _timestamps(path, **options) -> list[float]:
    return [t for t, _ in sample_frames(str(path), VideoSampling(**options))]


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mkv", ".mov"])
def test_samples_land_on_the_scene_boundaries(tmp_path, suffix):
    path = tmp_path / f"scenes{suffix}"
    starts = write_video(path, list(zip(COLOURS, LENGTHS, strict=True)), fps=FPS)
    got = _timestamps(path)
    assert len(got) == len(starts)  # one frame per scene: the 15 s shot is not resampled
    assert np.abs(np.asarray(got) - np.asarray(starts)).max() <= 2 * FRAME + 1e-6


def test_near_identical_frames_are_dropped_and_slow_changes_sampled(tmp_path):
    path = tmp_path / "static.mp4"
    write_video(path, [(COLOURS[0], 10), (COLOURS[4], 150)], fps=FPS)
    assert _timestamps(path) == pytest.approx([0.0, 1.0])
    # the max interval does pick frames of the static shot; they are near-identical, dropped
    kept_all = _timestamps(path, duplicate_threshold=0.0)
    assert kept_all == pytest.approx([0.0, 1.0, 11.0])
    fade = [(np.full((48, 64, 3), 20 + i * 2 // 3, np.int16), 1) for i in range(300)]  # 30 s
    write_video(tmp_path / "fade.mp4", fade, fps=FPS)
    got = _timestamps(tmp_path / "fade.mp4", max_interval_s=5.0)
    assert got == pytest.approx([0.0, 5.0, 10.0, 15.0, 20.0, 25.0])


def test_a_cut_between_similar_shots_is_found_against_the_recent_motion(tmp_path):
    shots = []
    for i, colour in enumerate(COLOURS[:4]):  # same grey, a small square moves and recolours
        picture = np.full((48, 64, 3), 90, np.int16)
        picture[8 + 6 * i : 20 + 6 * i, 6 + 12 * i : 18 + 12 * i] = colour
        shots.append((picture, 25))
    starts = write_video(tmp_path / "similar.mp4", shots, fps=FPS)
    got = _timestamps(tmp_path / "similar.mp4")
    assert np.abs(np.asarray(got) - np.asarray(starts)).max() <= 2 * FRAME + 1e-6
    absolute_only = _timestamps(tmp_path / "similar.mp4", adaptive_ratio=1e9)
    assert absolute_only == [0.0]  # each change is far below the absolute threshold


def test_sampler_reports_size_and_duration(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, [(COLOURS[0], 12), (COLOURS[1], 8)], fps=FPS, size=(80, 32))
    info = SampledVideo()
    list(sample_frames(str(path), VideoSampling(), info))
    assert (info.width, info.height, info.decoded) == (80, 32, 20)
    assert info.duration == pytest.approx(2.0)


def _library(tmp_path):
    folder = tmp_path / "library"
    write_images(folder, 5)
    starts = write_video(folder / "clip.mp4", list(zip(COLOURS, LENGTHS, strict=True)), fps=FPS)
    return folder, starts


def _colour_image(colour) -> Image.Image:
    return Image.fromarray(np.full((48, 64, 3), colour, np.uint8))


def _consistent(index) -> None:
    assert sorted(index.store.ids().tolist()) == sorted(index.meta.all_ids().tolist())


def test_video_frames_are_indexed_with_timestamps_and_grouped(tmp_path, model):
    folder, starts = _library(tmp_path)
    index = clipforge.Index.open(tmp_path / "db", model)
    report = index.sync([folder])
    assert (report.added, report.failed, report.videos) == (6, [], 1)
    assert report.video_seconds == pytest.approx(sum(LENGTHS) / FPS)
    assert report.seconds_per_video_hour is not None and report.seconds_per_video_hour > 0
    stored = index.meta.db.execute("SELECT timestamp FROM frames ORDER BY timestamp").fetchall()
    assert np.abs(np.asarray([t for (t,) in stored]) - starts).max() <= 2 * FRAME + 1e-6
    assert len(index) == 6 and len(index.store) == 6 + len(starts) - 1
    _consistent(index)
    info = index.info()
    assert (info["videos"], info["video_frames"]) == (1, len(starts))

    for scene in (2, 3, 5):
        hits = index.search(image=_colour_image(COLOURS[scene]), k=6)
        paths = [h.path for h in hits]
        assert len(paths) == len(set(paths)) == 6  # the video once, with every image
        top = hits[0]
        assert top.path.endswith("clip.mp4")
        assert top.timestamp == pytest.approx(starts[scene], abs=2 * FRAME)
        assert top.to_dict()["timestamp"] == pytest.approx(starts[scene], abs=2 * FRAME)
        assert all(h.timestamp is None for h in hits[1:])
        assert "timestamp" not in hits[1].to_dict()
    video_only = Filters(path_glob="*.mp4")
    hits = index.search(image=_colour_image(COLOURS[3]), k=5, filters=video_only)
    assert [h.path.endswith("clip.mp4") for h in hits] == [True]
    assert hits[0].timestamp == pytest.approx(starts[3], abs=2 * FRAME)


def test_reindexed_and_removed_videos_leave_no_stale_frames(tmp_path, model):
    folder, _ = _library(tmp_path)
    index = clipforge.Index.open(tmp_path / "db", model)
    index.sync([folder])
    files = {i for (i,) in index.meta.db.execute("SELECT id FROM images")}
    old_frames = set(index.store.ids().tolist()) - files
    assert len(old_frames) == len(LENGTHS) - 1
    write_video(folder / "clip.mp4", [(COLOURS[0], 10), (COLOURS[1], 10)], fps=FPS)
    report = index.sync([folder])
    assert (report.replaced, report.videos) == (1, 1)
    assert not old_frames & set(index.store.ids().tolist())
    assert index.meta.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 2
    _consistent(index)
    (folder / "clip.mp4").unlink()
    assert index.sync([folder]).removed == 1
    assert index.meta.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 0
    assert len(index.store) == 5
    _consistent(index)
    index.close()
    reopened = clipforge.Index.open(tmp_path / "db", model)
    _consistent(reopened)
    assert (reopened.info()["videos"], len(reopened)) == (0, 5)


def test_renamed_video_keeps_its_frames(tmp_path, model):
    folder, starts = _library(tmp_path)
    index = clipforge.Index.open(tmp_path / "db", model)
    index.sync([folder])
    before = sorted(index.store.ids().tolist())
    (folder / "clip.mp4").rename(folder / "moved.mkv")
    report = index.sync([folder])
    assert (report.renamed, report.added, report.videos) == (1, 0, 0)
    assert sorted(index.store.ids().tolist()) == before
    hit = index.search(image=_colour_image(COLOURS[2]), k=1)[0]
    assert hit.path.endswith("moved.mkv")
    assert hit.timestamp == pytest.approx(starts[2], abs=2 * FRAME)


def test_missing_pyav_is_an_error_naming_the_package(tmp_path, model, monkeypatch):
    folder, _ = _library(tmp_path)
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    index = clipforge.Index.open(tmp_path / "db", model)
    report = index.sync([folder])
    assert report.added == 5
    assert [(p.rsplit("/", 1)[1], r) for p, r in report.failed] == [("clip.mp4", AV_MISSING)]
    assert "pip install 'clipforge[video]'" in index.errors()[0][1]
    monkeypatch.delitem(sys.modules, "av")
    again = index.sync([folder], rehash=True)  # same file: re-tried only when it changes
    assert again.videos == 0
    (folder / "clip.mp4").touch()
    assert index.sync([folder]).videos == 1 and index.errors() == []


def test_undecodable_video_is_recorded(tmp_path, model):
    folder = tmp_path / "library"
    write_images(folder, 2)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video at all")
    (folder / "empty.webm").write_bytes(b"")
    index = clipforge.Index.open(tmp_path / "db", model)
    report = index.sync([folder])
    assert report.added == 2
    reasons = dict(index.errors())
    assert set(reasons) == {str(folder / "broken.mp4"), str(folder / "empty.webm")}
    assert all(r.startswith("cannot decode video:") for r in reasons.values())


def test_cli_json_carries_timestamps_and_the_summary_speed(tmp_path, model):
    folder, starts = _library(tmp_path)
    ckpt = clipforge.save(model, tmp_path / "tiny")
    runner = CliRunner()
    db = str(tmp_path / "db")
    result = runner.invoke(app, ["index", str(folder), "--db", db, "--model", str(ckpt)])
    assert result.exit_code == 0, result.output
    assert "1 video" in result.stdout and "s per hour of video" in result.stdout
    _colour_image(COLOURS[3]).save(tmp_path / "query.png")
    result = runner.invoke(
        app, ["search", "--image", str(tmp_path / "query.png"), "--db", db, "-k", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits[0]["path"].endswith("clip.mp4")
    assert hits[0]["timestamp"] == pytest.approx(starts[3], abs=2 * FRAME)
    text = runner.invoke(app, ["search", "--image", str(tmp_path / "query.png"), "--db", db])
    assert f"clip.mp4 @ {hits[0]['timestamp']:.1f} s" in text.stdout


def test_a_crash_between_the_video_commit_and_the_vector_file_is_repaired(tmp_path, model):
    folder, starts = _library(tmp_path)
    video = folder / "clip.mp4"
    video.rename(tmp_path / "later.mp4")
    index = clipforge.Index.open(tmp_path / "db", model)
    index.sync([folder])
    (tmp_path / "later.mp4").rename(video)

    def crash(ids, vectors):
        raise KeyboardInterrupt  # the process dies after SQLite committed the video

    index.store.inner.add = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        index.sync([folder])
    index.close()
    with pytest.warns(IndexRepairedWarning):
        reopened = clipforge.Index.open(tmp_path / "db", model)
    _consistent(reopened)
    assert len(reopened.store) == 5 + len(starts)
    hit = reopened.search(image=_colour_image(COLOURS[3]), k=1)[0]
    assert hit.path == str(video) and hit.timestamp == pytest.approx(starts[3], abs=2 * FRAME)
    assert reopened.sync([folder]).unchanged == 6  # committed: not embedded again
