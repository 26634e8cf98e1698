"""The service under hostile input: swapped files, oversized bodies, hostile numbers, caps."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import sqlite3

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import clipforge
from clipforge.serve import ServeConfig, create_app
from tests.conftest import tiny_model
from tests.index_helpers import write_images

SECRET = b"TOP SECRET: not an image, never to be served"


@pytest.fixture
def served(tmp_path):
    """A fresh 4-image index (its files get swapped) and a secret outside and inside it."""
    photos = tmp_path / "photos"
    files = write_images(photos, 4)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (photos / "notes.txt").write_bytes(SECRET)  # inside the root, never indexed
    index = clipforge.Index.open(tmp_path / "db", tiny_model())
    index.sync([photos])
    return index, tmp_path, {str(f): index.meta.by_hash(_sha(f)).id for f in files}


def _client(index, **config) -> TestClient:
    return TestClient(create_app(index, ServeConfig(**config)), raise_server_exceptions=False)


def _refused(client: TestClient, id_: int) -> None:
    for url in (f"/images/{id_}", f"/thumbnails/{id_}"):
        response = client.get(url)
        assert response.status_code in (403, 404), (url, response.status_code)
        assert SECRET not in response.content


def test_served_file_is_the_indexed_one(served):
    index, tmp_path, ids = served
    client = _client(index)
    paths = list(ids)
    original = _bytes(paths[0])
    assert client.get(f"/images/{ids[paths[0]]}").content == original
    os.unlink(paths[0])
    os.symlink(tmp_path / "secret.txt", paths[0])  # symlink out of the indexed folder
    _refused(client, ids[paths[0]])
    os.unlink(paths[1])
    os.symlink(tmp_path / "photos" / "notes.txt", paths[1])  # symlink within the folder
    _refused(client, ids[paths[1]])
    os.unlink(paths[2])
    os.link(tmp_path / "secret.txt", paths[2])  # hard link: a regular file, another inode
    _refused(client, ids[paths[2]])
    copy = tmp_path / "copy.png"
    shutil.copy(paths[3], copy)
    os.replace(copy, paths[3])  # same bytes restored under a new inode: still served
    assert client.get(f"/images/{ids[paths[3]]}").content == _bytes(paths[3])


def test_fifo_and_directory_swapped_in_are_refused_without_blocking(served):
    index, _, ids = served
    client = _client(index)
    first, second = list(ids)[:2]
    os.unlink(first)
    os.mkfifo(first)  # opening it for reading would block without O_NONBLOCK
    os.unlink(second)
    os.mkdir(second)
    for path in (first, second):
        _refused(client, ids[path])


def test_rows_indexed_before_the_identity_columns_are_checked_by_hash(served):
    index, tmp_path, ids = served
    db = sqlite3.connect(tmp_path / "db" / "metadata.sqlite")
    db.execute("ALTER TABLE images DROP COLUMN device")  # a database from before the migration
    db.execute("ALTER TABLE images DROP COLUMN inode")
    db.commit()
    db.close()
    index.close()
    old = clipforge.Index.open(tmp_path / "db", tiny_model())  # migrates: NULL device/inode
    first, second = list(ids)[:2]
    assert old.meta.get(ids[first]).device is None
    client = _client(old)
    assert client.get(f"/images/{ids[first]}").content == _bytes(first)
    os.unlink(second)
    os.link(tmp_path / "secret.txt", second)
    _refused(client, ids[second])
    new_file = write_images(tmp_path / "photos", 1, start=50)[0]
    old.sync([tmp_path / "photos"])
    assert old.meta.by_hash(_sha(new_file)).inode == os.stat(new_file).st_ino


def _bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _sha(path) -> str:
    return hashlib.sha256(_bytes(path)).hexdigest()


async def _post_body(app, headers: list[tuple[bytes, bytes]], chunks) -> tuple[int, int]:
    """POST /search/image through the ASGI app; (status, body bytes the app pulled)."""
    pulled = 0
    messages = []
    source = iter(chunks)

    async def receive() -> dict:
        nonlocal pulled
        chunk = next(source, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/search/image", "raw_path": b"/search/image",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "headers": [(b"content-type", b"multipart/form-data; boundary=BOUNDARY"), *headers],
    }  # fmt: skip
    await app(scope, receive, send)
    return messages[0]["status"], pulled


def _huge_multipart(total: int, chunk: int = 64 * 1024):
    yield (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
    )
    for _ in range(total // chunk):
        yield bytes(chunk)


def test_upload_limit_is_enforced_while_the_body_is_read(served):
    index, _, _ = served
    app = create_app(index, ServeConfig(max_upload_bytes=20_000))
    streamed = asyncio.run(_post_body(app, [], _huge_multipart(40 * 1024 * 1024)))
    assert streamed[0] == 413 and streamed[1] < 20_000 + 64 * 1024 + 2 * 64 * 1024, streamed
    declared = [(b"content-length", str(300 * 1024 * 1024).encode())]
    up_front = asyncio.run(_post_body(app, declared, _huge_multipart(40 * 1024 * 1024)))
    assert up_front == (413, 0)


def test_hostile_numbers_are_4xx(served):
    index, _, ids = served
    client = _client(index, api_key="k")
    some = next(iter(ids.values()))
    bad = [
        f"/images/{2**63}", f"/images/{2**64 + 1}", "/images/-1", f"/thumbnails/{2**63}",
        f"/search/similar/{2**63}", "/search/similar/-5",
        "/search?q=x&after=nan", "/search?q=x&before=inf", "/search?q=x&after=-inf",
        "/search?q=x&after=1e300", "/search?q=x&min_width=1e30", f"/search?q=x&min_height={10**30}",
        "/search?q=x&min_score=nan", f"/search?q=x&k={10**12}", "/search?q=x&k=0",
        f"/search?q=x&glob={'*' * 5000}", f"/search?q={'x' * 5000}",
        "/search?q=x" + "&negative=n" * 17,
    ]  # fmt: skip
    for url in bad:
        response = client.get(url)
        assert 400 <= response.status_code < 500, (url, response.status_code)
    assert client.get("/search?q=x" + "&negative=n" * 16).status_code == 200
    assert client.get(f"/search/similar/{some}?k={10**4}").status_code == 200
    for key in ("clé".encode(), "🔑".encode(), b"\xff\xfe"):
        response = client.delete(f"/images/{some}", headers={"X-API-Key": key})
        assert response.status_code == 401, key
    assert client.delete(f"/images/{2**63}", headers={"X-API-Key": "k"}).status_code == 422


def test_upload_weights_must_be_finite(served):
    index, _, ids = served
    client = _client(index)
    data = _bytes(next(iter(ids)))
    for weight in ("nan", "inf", "-inf", "1e300"):
        response = client.post(
            "/search/image", params={"q": "cat", "text_weight": weight}, files={"file": data}
        )
        assert response.status_code == 422, weight
    ok = client.post("/search/image", params={"q": "cat", "text_weight": 0.5}, files={"file": data})
    assert ok.status_code == 200 and ok.json()["results"]


def test_pixel_limit_is_checked_before_decoding(served):
    index, _, _ = served
    client = _client(index, max_upload_pixels=1_000_000)
    big = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(big, format="PNG")  # ~100 KB, 10^8 pixels
    response = client.post("/search/image", files={"file": big.getvalue()})
    assert response.status_code == 413 and "pixels" in response.json()["detail"]
