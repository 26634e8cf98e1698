"""Real service processes on 127.0.0.1: a re-index off the event loop and stopped by
SIGTERM, concurrent large-pixel uploads under an address-space limit, a mixed fault load."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import io
import json
import resource
import signal
import sys
import threading
import time

import httpx
import pytest
from PIL import Image

import clipforge
from tests.conftest import REPO, tiny_model
from tests.index_helpers import write_images
from tests.serve_helpers import SLOW_ENV, start, status_kib, stop


def _index(tmp_path, n: int = 8, spec: dict | None = None):
    photos = tmp_path / "photos"
    write_images(photos, n)
    with clipforge.Index.open(tmp_path / "db", tiny_model(), model_spec=spec) as index:
        index.sync([photos], progress=False)
    return photos, tmp_path / "db"


@pytest.mark.slow  # a real server and a re-index child process
def test_reindex_leaves_the_loop_free_and_sigterm_stops_it(tmp_path):
    photos, db = _index(tmp_path)
    proc, url = start(["-m", "tests.serve_server", "--db", str(db)], env={SLOW_ENV: "120"})
    outcome: dict = {}
    try:
        write_images(photos, 4, start=100)  # new files: the re-index embeds them (slowly)

        def reindex() -> None:
            try:
                response = httpx.post(url + "/reindex", headers={"X-API-Key": "k"}, timeout=300)
                outcome["status"] = response.status_code
            except httpx.HTTPError as exc:
                outcome["status"] = type(exc).__name__

        request = threading.Thread(target=reindex)
        request.start()
        time.sleep(1.0)  # the re-index is under way (its embedding sleeps 120 s)
        latencies = []
        with httpx.Client(base_url=url, timeout=5) as http:
            key = {"X-API-Key": "k"}
            assert http.post("/reindex", headers=key).status_code == 409  # one at a time
            assert http.delete("/images/1", headers=key).status_code == 409
            assert http.get("/health").json()["reindex"]["running"] is True
            for i in range(40):
                began = time.perf_counter()
                assert http.get("/health").status_code == 200
                latencies.append(time.perf_counter() - began)
                if i % 8 == 0:
                    assert http.get("/search", params={"q": f"query {i}"}).status_code == 200
                    assert http.get("/images/1").status_code == 200
                    assert http.get("/").status_code == 200
                time.sleep(0.05)
        assert request.is_alive(), "the re-index ended before the checks: not a real overlap"
        assert max(latencies) < 0.1, sorted(latencies)[-5:]
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.monotonic() - began < 5.0
        request.join(30)
        assert outcome["status"] in (503, "RemoteProtocolError", "ReadError"), outcome
    finally:
        stop(proc)
    with clipforge.Index.open(db, tiny_model()) as index:  # consistent after the kill
        assert len(index) == 8 and len(index.search("a cat", k=3)) == 3


def _png(side: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (side, side), "white").save(out, format="PNG")
    return out.getvalue()


@pytest.mark.slow  # a real server under an address-space limit, 40 uploads
def test_concurrent_large_pixel_uploads_under_an_address_space_limit(tmp_path):
    ckpt = clipforge.save(tiny_model(), tmp_path / "tiny")
    _, db = _index(tmp_path, spec={"model": str(ckpt), "weights": None, "pretrained": None})
    proc, url = start(["-m", "clipforge.cli", "serve", "--db", str(db)])
    try:
        large, huge = _png(4000), _png(10_000, "L")  # 16 M pixels (allowed), 100 M (not)
        assert httpx.post(url + "/search/image", files={"file": large}, timeout=60).is_success
        limit = status_kib(proc.pid, "VmSize") * 1024 + 600 * 1024 * 1024
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (limit, limit))

        async def flood() -> list:
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                bodies = [large] * 40 + [huge] * 4
                return await asyncio.gather(
                    *(http.post("/search/image", files={"file": b}) for b in bodies),
                    return_exceptions=True,
                )

        replies = asyncio.run(flood())
        codes = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in replies]
        assert set(codes[:40]) <= {200, 503} and codes.count(200) >= 20, codes
        assert codes[40:] == [413] * 4, codes
        assert proc.poll() is None
        assert httpx.get(url + "/health", timeout=5).json()["status"] == "ok"
        assert httpx.get(url + "/search", params={"q": "after"}, timeout=30).status_code == 200
    finally:
        stop(proc)


def _faults_module():
    spec = importlib.util.spec_from_file_location(
        "serve_faults", REPO / "benchmarks/serve_faults.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def test_serving_process_freezes_its_startup_heap_so_collections_stay_short():
    """A full collection of the serving stack's ~230,000 startup objects holds the GIL for
    70-94 ms: prepare_process freezes them, so a collection walks only what came later."""
    from clipforge.serve.runner import SWITCH_INTERVAL_S, prepare_process

    model = tiny_model()  # noqa: F841  (the model's objects are part of the heap)
    interval = sys.getswitchinterval()
    before = len(gc.get_objects())
    try:
        prepare_process()
        frozen, walked = gc.get_freeze_count(), len(gc.get_objects())
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
    finally:  # the heap stays frozen, as tests/conftest.py freezes it after collection:
        sys.setswitchinterval(interval)  # unfreezing would undo that for the whole worker
    assert frozen > 0.5 * before and walked < 0.01 * before, (before, frozen, walked)


@pytest.mark.slow  # a bounded load run against a real server
@pytest.mark.alone  # its /health limit is the server's latency, not another test's load
def test_mixed_fault_load_has_no_5xx_and_health_stays_fast(tmp_path):
    faults = _faults_module()
    ckpt = clipforge.save(tiny_model(), tmp_path / "tiny")
    spec = {"model": str(ckpt), "weights": None, "pretrained": None}
    plan = faults.Plan(images=16, new_images=8, searches=120, uploads=10, clients=4)
    out = faults.run(tiny_model(), spec, plan, tmp_path / "work")
    print(json.dumps(out))
    assert out["server_5xx"] == 0, out["statuses"]
    assert "unexpected" not in out["statuses"], out["statuses"]
    assert out["statuses"]["reindex"] == {"200": 1} and out["reindex"]["added"] == 8
    assert out["health_ms"]["n"] > 20 and out["health_ms"]["max"] < 100, out["health_ms"]
    assert out["rss_mib"]["peak"] < out["rss_mib"]["start"] + 1024, out["rss_mib"]
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
    assert out["sigterm_exit_s"] < 5 and out["exit_code"] in (0, -signal.SIGTERM), out
