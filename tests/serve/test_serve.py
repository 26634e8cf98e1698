"""The HTTP service: search endpoints, files by id only, upload limits, keys, batching."""

from __future__ import annotations

import asyncio
import hashlib
import io

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import clipforge
from clipforge.serve import ServeConfig, create_app
from tests.conftest import tiny_model
from tests.index_helpers import brute_force, write_image, write_images


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    write_images(root / "photos", 12)
    (root / "secret.txt").write_text("not for you")
    idx = clipforge.Index.open(root / "db", tiny_model())
    idx.sync([root / "photos"])
    return idx


def _client(index, **config) -> TestClient:
    return TestClient(create_app(index, ServeConfig(**config)))


def test_text_search_equals_library_search(index):
    client = _client(index)
    body = client.get("/search", params={"q": "a red car", "k": 5}).json()
    expected = [h.id for h in index.search("a red car", k=5)]
    assert [r["id"] for r in body["results"]] == expected
    assert body["results"][0]["thumbnail"] == f"/thumbnails/{expected[0]}"
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["images"] == 12
    assert "/search" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    assert "drop an image" in client.get("/").text


def test_similar_and_filters(index):
    client = _client(index)
    ids, vectors = index.meta.vectors(None, 32)
    _, top = brute_force(vectors, ids, vectors[3:4], 4)
    body = client.get(f"/search/similar/{ids[3]}", params={"k": 4}).json()
    assert [r["id"] for r in body["results"]] == top[0].tolist()
    none = client.get("/search", params={"q": "x", "glob": "*/nowhere/*"}).json()
    assert none["results"] == []
    assert client.get("/search/similar/99999").status_code == 404


def test_image_upload_search_and_limits(index):
    client = _client(index, max_upload_bytes=20_000, max_upload_pixels=64 * 64)
    path = index.meta.get(int(index.meta.all_ids()[0])).path
    with open(path, "rb") as f:
        body = client.post("/search/image", files={"file": ("q.png", f, "image/png")}).json()
    assert body["results"][0]["path"] == path and body["results"][0]["score"] > 0.999
    big = io.BytesIO(np.random.default_rng(0).bytes(30_000))
    assert client.post("/search/image", files={"file": ("big.png", big)}).status_code == 413
    wide = io.BytesIO()
    Image.new("RGB", (200, 200)).save(wide, format="PNG")  # small file, too many pixels
    wide.seek(0)
    assert client.post("/search/image", files={"file": ("w.png", wide)}).status_code == 413
    junk = io.BytesIO(b"definitely not an image")
    assert client.post("/search/image", files={"file": ("j.png", junk)}).status_code == 400


@pytest.mark.parametrize(
    "url",
    [
        "/images/../secret.txt",
        "/images/..%2F..%2Fsecret.txt",
        "/images/%2Fetc%2Fpasswd",
        "/thumbnails/..%2Fsecret.txt",
        "/images/-1",
        "/images/99999",
        "/static/../../secret.txt",
    ],
)
def test_path_traversal_is_refused(index, url):
    response = _client(index).get(url)
    assert response.status_code in (404, 422)
    assert b"not for you" not in response.content


def test_files_are_served_by_id(index):
    client = _client(index)
    id_ = int(index.meta.all_ids()[0])
    row = index.meta.get(id_)
    with open(row.path, "rb") as f:
        assert client.get(f"/images/{id_}").content == f.read()
    thumb = client.get(f"/thumbnails/{id_}")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (row.width, row.height)


def test_mutating_endpoints_need_a_configured_key(index, tmp_path):
    assert _client(index).delete("/images/1").status_code == 403
    keyed = _client(index, api_key="s3cret")
    assert keyed.delete("/images/1").status_code == 401
    assert keyed.delete("/images/1", headers={"X-API-Key": "wrong"}).status_code == 401
    extra = write_image(tmp_path / "extra.png", seed=77)
    index.add([extra])
    id_ = index.meta.by_hash(hashlib.sha256(extra.read_bytes()).hexdigest()).id
    ok = keyed.delete(f"/images/{id_}", headers={"X-API-Key": "s3cret"})
    assert ok.json() == {"removed": 1} and index.meta.get(id_) is None
    assert _client(index).post("/reindex").status_code == 403
    reindexed = keyed.post("/reindex", headers={"X-API-Key": "s3cret"}).json()
    assert (reindexed["unchanged"], reindexed["added"], reindexed["removed"]) == (12, 0, 0)


def test_cors_is_off_by_default(index):
    headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    response = _client(index).options("/search", headers=headers)
    assert "access-control-allow-origin" not in response.headers


def test_concurrent_text_queries_are_batched_and_cached(index):
    app = create_app(index, ServeConfig(batch_wait_s=0.05))

    async def burst() -> list[dict]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            queries = [f"photo number {i}" for i in range(8)]
            replies = await asyncio.gather(
                *(client.get("/search", params={"q": q}) for q in queries)
            )
            again = await client.get("/search", params={"q": queries[0]})
            return [r.json() for r in [*replies, again]]

    bodies = asyncio.run(burst())
    stats = app.state.batcher.stats()
    assert stats["encoded"] == 8 and stats["batches"] < 8 and stats["cache_hits"] == 1
    for body in bodies[:8]:
        assert [r["id"] for r in body["results"]] == [h.id for h in index.search(body["query"])]
    assert bodies[8]["results"] == bodies[0]["results"]
