"""``clipforge index`` / ``clipforge search`` on a tiny saved checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from tests.conftest import REPO, perturb_, tiny_model
from tests.index_helpers import write_images

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    photos = root / "photos"
    files = write_images(photos, 10)
    shutil.copy(files[0], photos / "copy.png")
    (photos / "bad.jpg").write_bytes(b"nope")
    ckpt = clipforge.save(tiny_model(), root / "tiny")
    result = runner.invoke(
        app, ["index", str(photos), "--db", str(root / "db"), "--model", str(ckpt), "--json"]
    )
    assert result.exit_code == 0, result.output
    return root, ckpt, json.loads(result.stdout)


def test_index_reports_and_lists_errors(built):
    root, _, out = built
    assert out["report"]["added"] == 10 and out["report"]["duplicates"] == 1
    assert out["index"]["images"] == 10 and out["index"]["store"]["kind"] == "flat"
    errors = runner.invoke(app, ["index", "--db", str(root / "db"), "--errors"])
    assert errors.exit_code == 0 and "bad.jpg\tnot a recognised image format" in errors.stdout


def test_search_uses_the_recorded_model(built):
    root, ckpt, _ = built
    result = runner.invoke(app, ["search", "a cat", "--db", str(root / "db"), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    model = clipforge.load(ckpt)
    index = clipforge.Index.open(root / "db", model)
    assert [h["id"] for h in hits] == [h.id for h in index.search("a cat", k=3)]
    similar = runner.invoke(
        app, ["search", "--image", hits[0]["path"], "--db", str(root / "db"), "--json"]
    )
    assert json.loads(similar.stdout)[0]["path"] == hits[0]["path"]
    dupes = runner.invoke(
        app, ["search", "--duplicates", "--threshold", "0.9999", "--db", str(root / "db"), "--json"]
    )
    assert [len(g) for g in json.loads(dupes.stdout)] == [2]


def test_search_with_another_model_is_refused(built, tmp_path):
    root, _, _ = built
    other = clipforge.save(perturb_(tiny_model(), seed=4), tmp_path / "other")
    result = runner.invoke(
        app, ["search", "a cat", "--db", str(root / "db"), "--model", str(other)]
    )
    assert result.exit_code == 2
    assert "built with model id" in result.output


@pytest.mark.slow  # a real server process on loopback: end to end
def test_serve_command_answers_on_loopback(built):
    root, _, _ = built
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "clipforge.cli", "serve", "--db", str(root / "db")]
    proc = subprocess.Popen([*command, "--port", str(port)], env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health["images"] == 10 and health["status"] == "ok"
        hits = httpx.get(f"http://127.0.0.1:{port}/search", params={"q": "a cat", "k": 2}).json()
        assert len(hits["results"]) == 2
        assert httpx.delete(f"http://127.0.0.1:{port}/images/1").status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=30)
