"""Capture-date, place and camera filters equal brute force on the same EXIF; sort by date;
the automatic relevance cutoff keeps the planted relevant images; older databases migrate."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipforge
from clipforge.errors import UsageError
from clipforge.index import Filters
from clipforge.index.filters import AUTO_Z, robust_cutoff
from clipforge.index.querying import image_vector
from tests.conftest import tiny_model
from tests.index_helpers import write_images
from tests.photo_helpers import Shot, write_photo

CITIES = {"paris": (48.8566, 2.3522), "sydney": (-33.8688, 151.2093), "nyc": (40.7128, -74.006)}
CAMERAS = [("Apple", "iPhone 15"), ("Canon", "Canon EOS R6"), ("Google", "Pixel 8"), (None, None)]
OFFSETS = ["+02:00", "-07:00", "+05:30", "+00:00", "-03:30", None]
N = 40


def _library(rng: np.random.Generator) -> list[tuple[str, Shot, float]]:
    """(name, shot, file mtime) of N photos with varied dates, offsets, places and cameras."""
    out = []
    start = datetime(2021, 1, 1).timestamp()
    for i in range(N):
        wall = datetime.fromtimestamp(start + rng.uniform(0, 5 * 365 * 86400), timezone.utc)
        dated = i % 6 != 5
        lat = lon = None
        if i % 3:
            city = list(CITIES.values())[rng.integers(3)]
            lat = city[0] + rng.uniform(-0.5, 0.5)
            lon = city[1] + rng.uniform(-0.5, 0.5)
        make, model = CAMERAS[rng.integers(len(CAMERAS))]
        shot = Shot(
            wall.strftime("%Y:%m:%d %H:%M:%S") if dated else None,
            OFFSETS[rng.integers(len(OFFSETS))] if dated else None, lat, lon, make, model,
        )  # fmt: skip
        mtime = float(int(start + rng.uniform(0, 5 * 365 * 86400)))
        out.append((f"photo{i:02d}.jpg", shot, mtime))
    return out


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    shots = _library(np.random.default_rng(21))
    for seed, (name, shot, mtime) in enumerate(shots):
        write_photo(root / "p" / name, shot, seed, mtime=mtime)
    index = clipforge.Index.open(root / "db", tiny_model())
    index.sync([root / "p"])
    yield index, {str(root / "p" / name): (shot, mtime) for name, shot, mtime in shots}
    index.close()


# -- the brute force: what each filter means, computed from the shots alone ---------------
def _when(shot: Shot, mtime: float) -> tuple[float, float]:
    """(capture instant, wall clock read as UTC) from the shot's EXIF, else the file time."""
    if shot.taken is None:
        local = mtime + datetime.fromtimestamp(mtime).astimezone().utcoffset().total_seconds()
        return mtime, local
    wall = datetime.strptime(shot.taken, "%Y:%m:%d %H:%M:%S").replace(tzinfo=timezone.utc)
    if shot.offset is None:
        return wall.timestamp(), wall.timestamp()
    sign = -1 if shot.offset[0] == "-" else 1
    hours, minutes = map(int, shot.offset[1:].split(":"))
    return (wall - sign * timedelta(hours=hours, minutes=minutes)).timestamp(), wall.timestamp()


def _km(lat1, lon1, lat2, lon2) -> float:  # spherical law of cosines (not haversine)
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    cos = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return 6371.0088 * math.acos(max(-1.0, min(1.0, cos)))


def _brute(shots: dict, *, instant=(None, None), local=(None, None), near=None, camera=None):
    kept = set()
    for path, (shot, mtime) in shots.items():
        at, wall = _when(shot, mtime)
        if instant[0] is not None and at < instant[0] or instant[1] is not None and at > instant[1]:
            continue
        if local[0] is not None and wall < local[0] or local[1] is not None and wall > local[1]:
            continue
        if near is not None and (
            shot.lat is None or _km(shot.lat, shot.lon, *near[:2]) > near[2] + 1e-9
        ):
            continue
        name = " ".join(p for p in (shot.make, shot.model) if p).lower()
        if camera is not None and (shot.make is None or camera.lower() not in name):
            continue
        kept.add(path)
    return kept


def _utc(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


CASES = [
    ({"taken_after": "2023-01-01", "taken_before": "2024-06-30"},
     {"local": (_utc(2023, 1, 1), _utc(2024, 7, 1) - 1e-6)}),
    ({"taken_after": "2022-03-01T12:00:00+00:00",
      "taken_before": datetime(2025, 2, 1, tzinfo=timezone(timedelta(hours=-5)))},
     {"instant": (_utc(2022, 3, 1, 12), _utc(2025, 2, 1, 5))}),
    ({"taken_after": _utc(2024, 1, 1)}, {"instant": (_utc(2024, 1, 1), None)}),
    ({"taken_before": datetime(2022, 12, 31, 23, 0)}, {"local": (None, _utc(2022, 12, 31, 23))}),
    ({"near": CITIES["paris"], "radius_km": 30.0}, {"near": (*CITIES["paris"], 30.0)}),
    ({"near": "{:f},{:f}".format(*CITIES["sydney"]), "radius_km": 60.0, "camera": "IPHONE"},
     {"near": (*CITIES["sydney"], 60.0), "camera": "iphone"}),
    ({"camera": "canon eos"}, {"camera": "canon eos"}),
    ({"camera": "Pixel", "taken_after": "2022-01-01", "near": CITIES["nyc"], "radius_km": 80.0},
     {"camera": "pixel", "local": (_utc(2022, 1, 1), None), "near": (*CITIES["nyc"], 80.0)}),
]  # fmt: skip


@pytest.mark.parametrize(("given", "meaning"), CASES)
def test_filter_equals_brute_force(library, given, meaning):
    index, shots = library
    expected = _brute(shots, **meaning)
    assert 0 < len(expected) < len(shots)  # each case selects something, not everything
    query = np.random.default_rng(0).standard_normal(32).astype(np.float32)
    query /= np.linalg.norm(query)
    hits = index.search_vectors(query, N, Filters(**given))[0]
    assert {h.path for h in hits} == expected


@pytest.mark.parametrize("sort", ["date", "date-asc"])
def test_sort_by_capture_date(library, sort):
    index, shots = library
    query = index.meta.vectors(None, 32)[1][0]
    hits = index.search_vectors(query, N, Filters(sort=sort))[0]
    instants = [_when(*shots[h.path])[0] for h in hits]
    assert len(hits) == N
    assert instants == sorted(instants, reverse=sort == "date")
    assert [h.taken_at for h in hits] == pytest.approx(instants, abs=1e-3)
    by_score = index.search_vectors(query, N, Filters())[0]
    assert [h.score for h in by_score] == sorted((h.score for h in by_score), reverse=True)


def test_hits_carry_capture_date_place_camera(library):
    index, shots = library
    hit = next(
        h for h in index.search_vectors(index.meta.vectors(None, 32)[1][0], N)[0]
        if shots[h.path][0].offset and shots[h.path][0].lat is not None
        and shots[h.path][0].make
    )  # fmt: skip
    shot = shots[hit.path][0]
    data = hit.to_dict()
    wall = datetime.strptime(shot.taken, "%Y:%m:%d %H:%M:%S").isoformat()
    assert data["taken"] == wall + shot.offset and data["taken_source"] == "exif"
    assert (data["lat"], data["lon"]) == pytest.approx((shot.lat, shot.lon), abs=1e-5)
    assert shot.model in data["camera"]


@pytest.mark.parametrize(
    "bad",
    [{"near": (91.0, 0.0), "radius_km": 1.0}, {"near": (0.0, 0.0)}, {"near": "x", "radius_km": 1.0},
     {"taken_after": "yesterday"}, {"sort": "name"}, {"min_score": "high"},
     {"min_score": float("nan")}],
)  # fmt: skip
def test_bad_filters_are_usage_errors(bad):
    with pytest.raises(UsageError):
        Filters(**bad)


def test_auto_cutoff_keeps_the_planted_relevant_images(tmp_path):
    write_images(tmp_path / "p", 80)  # background: unrelated noise photos
    rng = np.random.default_rng(1)

    def planted() -> Image.Image:  # red scene with a blue box, with noise
        a = np.zeros((40, 48, 3), np.int64)
        a[..., 0] = 200
        a[10:30, 12:36] = (30, 60, 200)
        return Image.fromarray(np.clip(a + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8))

    relevant = set()
    for i in range(6):
        planted().save(tmp_path / "p" / f"planted{i}.png")
        relevant.add(str(tmp_path / "p" / f"planted{i}.png"))
    model = tiny_model()
    with clipforge.Index.open(tmp_path / "db", model) as index:
        index.sync([tmp_path / "p"])
        query = image_vector(model, planted())
        top = index.search_vectors(query, 30, Filters())[0]
        auto = index.search_vectors(query, 30, Filters(min_score="auto"))[0]
    assert len(top) == 30  # a fixed k returns unrelated images too
    assert {h.path for h in auto} == relevant


def test_robust_cutoff_on_a_score_distribution():
    rng = np.random.default_rng(0)
    background = rng.normal(0.20, 0.02, 10_000)
    relevant = rng.normal(0.33, 0.01, 15)
    cut = robust_cutoff(np.concatenate([background, relevant]))
    assert cut == pytest.approx(0.20 + AUTO_Z * 0.02, abs=0.005)
    assert (relevant >= cut).all()
    assert (background >= cut).mean() < 1e-3  # the rule's expected false-positive rate: 2e-4
    assert robust_cutoff(background[:5]) == -math.inf  # too few images to tell


def test_database_from_before_the_photos_table_migrates(tmp_path):
    shot = Shot("2020:02:02 10:00:00", "+01:00", 10.0, 20.0, "Canon", "Canon EOS R6")
    path = write_photo(tmp_path / "p" / "a.jpg", shot, mtime=_utc(2024, 5, 5))
    model = tiny_model()
    with clipforge.Index.open(tmp_path / "db", model) as index:
        index.sync([tmp_path / "p"])
        index.meta.db.executescript("DROP TRIGGER photos_forget; DROP TABLE photos;")
    with clipforge.Index.open(tmp_path / "db", model) as index:  # recreated, still empty
        query = index.meta.vectors(None, 32)[1][0]
        old = Filters(taken_after="2024-01-01")  # rows without EXIF data use the file time
        assert [h.path for h in index.search_vectors(query, 5, old)[0]] == [str(path)]
        index.sync([tmp_path / "p"])  # nothing to embed; the photos table is filled
        assert index.search_vectors(query, 5, old)[0] == []
        [hit] = index.search_vectors(query, 5, Filters(camera="eos", taken_before="2020-02-02"))[0]
        assert hit.taken == "2020-02-02T10:00:00+01:00"
        index.remove([path])
        assert index.meta.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0] == 0


def test_renamed_photo_keeps_its_metadata(tmp_path):
    path = write_photo(tmp_path / "p" / "a.jpg", Shot("2019:09:09 09:09:09", make="Nikon"))
    with clipforge.Index.open(tmp_path / "db", tiny_model()) as index:
        index.sync([tmp_path / "p"])
        path.rename(Path(tmp_path / "p" / "b.jpg"))
        assert index.sync([tmp_path / "p"]).renamed == 1
        query = index.meta.vectors(None, 32)[1][0]
        [hit] = index.search_vectors(query, 5, Filters(camera="nikon"))[0]
    assert hit.path.endswith("b.jpg") and hit.taken == "2019-09-09T09:09:09"


def test_cli_search_photo_flags(tmp_path):
    import json

    from typer.testing import CliRunner

    from clipforge.cli import app

    shots = {
        "paris.jpg": Shot("2024:07:01 18:30:00", "+02:00", 48.8584, 2.2945, "Apple", "iPhone 15", 6),
        "rome.jpg": Shot("2023:04:01 10:00:00", "+02:00", 41.8902, 12.4922, "Canon", "EOS R6"),
        "old.jpg": Shot("2019:05:05 12:00:00", None, None, None, "Apple", "iPhone 8"),
    }
    for seed, (name, shot) in enumerate(shots.items()):
        write_photo(tmp_path / "p" / name, shot, seed)
    ckpt = clipforge.save(tiny_model(), tmp_path / "tiny")
    db = ["--db", str(tmp_path / "db")]
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(tmp_path / "p"), *db, "--model", str(ckpt)]).exit_code == 0

    def names(*flags: str) -> list[str]:
        result = runner.invoke(app, ["search", "a photo", *db, "--json", *flags])
        assert result.exit_code == 0, result.output
        return [Path(h["path"]).name for h in json.loads(result.stdout)]

    assert names("--after", "2023-01-01", "--sort", "date") == ["paris.jpg", "rome.jpg"]
    assert names("--before", "2023-04-01", "--sort", "date-asc") == ["old.jpg", "rome.jpg"]
    assert names("--near", "41.89,12.49", "--radius-km", "1") == ["rome.jpg"]
    assert names("--camera", "iphone", "--sort", "date") == ["paris.jpg", "old.jpg"]
    assert len(names("--min-score", "auto")) == 3  # fewer than 8 images: no cutoff
    bad = runner.invoke(app, ["search", "x", *db, "--near", "95,0"])
    assert bad.exit_code == 2 and "latitude must be in [-90, 90]" in bad.output
    text = runner.invoke(app, ["search", "x", *db, "--camera", "eos", "--sort", "date"])
    assert text.stdout.strip().endswith("rome.jpg\t2023-04-01T10:00:00+02:00")
    with clipforge.Index.open(tmp_path / "db") as index:  # the upright size is recorded
        paris = index.meta.db.execute("SELECT width, height FROM images WHERE path LIKE '%paris%'")
        assert paris.fetchone() == (40, 48)
