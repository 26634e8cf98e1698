"""The HTTP API's photo filters (capture date, place, camera, sort, min_score=auto) equal the
library's; thumbnails of EXIF-rotated, HEIC and RAW photos; bad values are refused."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import clipforge
from clipforge.index import Filters
from clipforge.serve import ServeConfig, create_app
from tests.conftest import tiny_model
from tests.index_helpers import write_images
from tests.photo_helpers import Shot, jpeg_bytes, pixels, write_dng, write_heic, write_photo

SHOTS = {
    "paris.jpg": Shot("2024:07:01 18:30:00", "+02:00", 48.8584, 2.2945, "Apple", "iPhone 15", 6),
    "sydney.jpg": Shot("2023:01:15 09:00:00", "+11:00", -33.8568, 151.2153, "Canon", "EOS R6"),
    "nyc.jpg": Shot("2022:11:20 20:00:00", "-05:00", 40.6892, -74.0445, "Apple", "iPhone 12"),
    "old.jpg": Shot("2019:05:05 12:00:00", None, None, None, "Nikon", "D750"),
}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_photos")
    for seed, (name, shot) in enumerate(SHOTS.items()):
        write_photo(root / "photos" / name, shot, seed)
    write_heic(root / "photos" / "phone.heic", seed=9, shot=Shot(make="Apple", model="iPhone 15"))
    write_dng(root / "photos" / "camera.dng", jpeg_bytes(pixels(10, (64, 48))))
    write_images(root / "photos" / "noise", 10, start=20)
    idx = clipforge.Index.open(root / "db", tiny_model())
    idx.sync([root / "photos"])
    return idx


@pytest.fixture(scope="module")
def client(index):
    return TestClient(create_app(index, ServeConfig()))


def _names(results: list[dict]) -> list[str]:
    return [r["path"].rsplit("/", 1)[-1] for r in results]


@pytest.mark.parametrize(
    ("params", "filters"),
    [
        ({"taken_after": "2022-12-01", "taken_before": "2024-07-01"},
         Filters(taken_after="2022-12-01", taken_before="2024-07-01")),
        ({"taken_after": "2023-01-14T23:00:00+01:00"}, Filters(taken_after="2023-01-14T23:00:00+01:00")),
        ({"near": "48.86,2.29", "radius_km": 5}, Filters(near=(48.86, 2.29), radius_km=5)),
        ({"camera": "iphone", "sort": "date"}, Filters(camera="iphone", sort="date")),
        ({"sort": "date-asc", "k": 40}, Filters(sort="date-asc")),
        ({"min_score": "auto"}, Filters(min_score="auto")),
        ({"min_score": "0.05"}, Filters(min_score=0.05)),  # a number still works
    ],
)  # fmt: skip
def test_api_filters_equal_library(index, client, params, filters):
    body = client.get("/search", params={"q": "a photo", "k": 40, **params})
    assert body.status_code == 200, body.text
    expected = index.search("a photo", k=params.get("k", 40), filters=filters)
    assert [r["id"] for r in body.json()["results"]] == [h.id for h in expected]
    assert body.json()["results"] == [
        {**h.to_dict(), "image": f"/images/{h.id}", "thumbnail": f"/thumbnails/{h.id}"}
        for h in expected
    ]


def test_api_capture_dates_and_places(client):
    body = client.get("/search", params={"q": "x", "camera": "iphone", "sort": "date"}).json()
    # the HEIC has no EXIF date: its file time (today) is the newest
    assert _names(body["results"]) == ["phone.heic", "paris.jpg", "nyc.jpg"]
    assert body["results"][0]["taken_source"] == "file"
    paris = body["results"][1]
    assert paris["taken"] == "2024-07-01T18:30:00+02:00" and paris["taken_source"] == "exif"
    assert (round(paris["lat"], 4), round(paris["lon"], 4)) == (48.8584, 2.2945)
    near = client.get("/search", params={"q": "x", "near": "-33.86,151.21", "radius_km": 2})
    assert _names(near.json()["results"]) == ["sydney.jpg"]
    similar = client.get(f"/search/similar/{paris['id']}", params={"taken_before": "2020-01-01"})
    assert _names(similar.json()["results"]) == ["old.jpg"]


@pytest.mark.parametrize(
    "query",
    ["min_score=high", "min_score=2", "min_score=nan", "sort=name", "near=1,2",
     "near=95,0&radius_km=1", "radius_km=0&near=1,2", "taken_after=yesterday",
     "taken_before=" + "9" * 41, "radius_km=inf&near=1,2"],
)  # fmt: skip
def test_bad_photo_params_are_refused(client, query):
    response = client.get(f"/search?q=x&{query}")
    assert response.status_code in (400, 422), response.text
    assert "detail" in response.json()


def test_thumbnails_are_upright_and_decode_phone_formats(index, client):
    ids = {h.path.rsplit("/", 1)[-1]: h.id for h in index.search("x", k=40)}
    paris = Image.open(io.BytesIO(client.get(f"/thumbnails/{ids['paris.jpg']}").content))
    assert paris.size[1] > paris.size[0]  # stored 48x40 landscape, orientation 6: portrait
    for name in ("phone.heic", "camera.dng"):
        response = client.get(f"/thumbnails/{ids[name]}")
        assert response.status_code == 200
        assert Image.open(io.BytesIO(response.content)).format == "JPEG"
