"""A bounded fault-load run of ``clipforge serve`` on 127.0.0.1 (mixed, partly hostile traffic).

Starts the real command on a fresh index, then, at once: text searches (some with negative
prompts and filters), similar-image searches, thumbnails and originals; uploads near the
limits (just under and just over the byte and pixel limits, junk); hostile numbers; and a
re-index of newly written images in the middle. Meanwhile ``/health`` is polled from its own
thread every 20 ms and the server's RSS (re-index child included) sampled every 100 ms.
Everything is bounded by counts and a time limit; the server is stopped with SIGTERM.

    PYTHONPATH=src python benchmarks/serve_faults.py --arch ViT-B-32 --searches 600

prints one JSON summary: requests and status counts by kind, /health p50/p99/max (ms), RSS
at start and peak (MiB), the re-index report and time, seconds to stop after SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
KEY = "bench-key"
MAX_UPLOAD_MB = 1.0
MAX_PIXELS = 4_000_000
WORDS = [
    "a",
    "red",
    "car",
    "dog",
    "on",
    "the",
    "beach",
    "mountain",
    "at",
    "night",
    "city",
    "street",
    "cat",
    "sleeping",
    "two",
    "people",
]


@dataclass
class Plan:
    """How much traffic: counts, concurrency and the time limit (seconds)."""

    images: int = 48
    new_images: int = 24
    searches: int = 400
    uploads: int = 40
    clients: int = 8
    time_limit_s: float = 240.0


@dataclass
class Tally:
    statuses: dict = field(default_factory=lambda: defaultdict(Counter))
    health_ms: list = field(default_factory=list)
    health_at: list = field(default_factory=list)  # perf_counter at each poll
    reindex_window: tuple = (0.0, 0.0)
    rss_kib: list = field(default_factory=list)
    reindex: dict = field(default_factory=dict)

    def record(self, kind: str, status: int | str) -> None:
        self.statuses[kind][str(status)] += 1


def write_photos(folder: Path, n: int, start: int = 0, side: int = 96) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        pixels = np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i:04d}.png")


def build_index(workdir: Path, model, spec: dict, plan: Plan) -> Path:
    import clipforge

    write_photos(workdir / "photos", plan.images)
    with clipforge.Index.open(workdir / "db", model, model_spec=spec) as index:
        index.sync([workdir / "photos"], progress=False)
    return workdir / "db"


def upload_bodies() -> dict[str, tuple[bytes, int]]:
    """Upload kinds: (bytes, expected status)."""
    limit = int(MAX_UPLOAD_MB * 1024 * 1024)

    def png(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=1)
        return out.getvalue()

    side = int((limit * 0.9 / 3) ** 0.5)  # noise PNGs barely compress: just under the limit
    noise = np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)
    near_bytes = png(Image.fromarray(noise))
    assert len(near_bytes) < limit, len(near_bytes)
    edge = int(MAX_PIXELS**0.5)
    return {
        "near_byte_limit": (near_bytes, 200),
        "near_pixel_limit": (png(Image.new("RGB", (edge, edge), "orange")), 200),
        "over_byte_limit": (near_bytes + bytes(limit), 413),
        "over_pixel_limit": (png(Image.new("L", (edge + 1, edge + 1))), 413),
        "junk": (b"not an image at all" * 10, 400),
    }


HOSTILE = [
    f"/images/{2**63}", "/search?q=x&after=nan", "/search?q=x&min_width=1e30",
    f"/search?q=x&k={10**12}", "/search?q=x" + "&negative=n" * 17, "/search/similar/-1",
]  # fmt: skip


def start_server(db: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "clipforge.cli", "serve", "--db", str(db), "--port", str(port),
        "--api-key", KEY, "--max-upload-mb", str(MAX_UPLOAD_MB),
        "--max-upload-pixels", str(MAX_PIXELS), "--threads", "1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with open(log, "wb") as out:  # the access log and any traceback
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not come up")


def rss_kib(pid: int) -> tuple[int, int]:
    """RSS of ``pid`` and of its children (the re-index process), KiB."""
    children: list[int] = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):  # any thread's children
        with contextlib.suppress(OSError):
            children += [int(p) for p in listing.read_text().split()]
    return _vm_rss(pid), sum(_vm_rss(p) for p in children)


def _vm_rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def monitor(url: str, pid: int, done, results) -> None:
    """In its own process (no GIL shared with the load generator): poll /health every 20 ms
    and sample RSS every 100 ms until ``done``; send back (statuses, ms, times, rss).

    Forked from the load generator, it inherits that process's whole heap (in a test run,
    pytest's, with every module it has loaded): frozen, so that a collection here never walks
    it inside a timed request and reports the monitor's own pause as the server's latency."""
    gc.freeze()
    statuses, ms, at, rss = Counter(), [], [], []
    with httpx.Client(base_url=url, timeout=10) as http:
        tick = 0
        while not done.is_set():
            start = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
            try:
                status = http.get("/health").status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            ms.append((time.perf_counter() - start) * 1000)
            at.append(start)
            statuses[str(status)] += 1
            if tick % 5 == 0:
                rss.append(rss_kib(pid))
            tick += 1
            time.sleep(0.02)
    results.send((dict(statuses), ms, at, rss))


async def searches(http: httpx.AsyncClient, n: int, ids: list[int], tally: Tally) -> None:
    rng = random.Random(n)
    for i in range(n):
        kind = ("text", "text_negative", "similar", "thumbnail", "image", "hostile")[i % 6]
        try:
            url, params = _search_request(kind, rng, ids)
            status = (await http.get(url, params=params)).status_code
        except httpx.TransportError as exc:  # counted: a dropped connection is a result
            status = type(exc).__name__
        tally.record(kind, status)


def _search_request(kind: str, rng: random.Random, ids: list[int]) -> tuple[str, dict]:
    if kind == "text":
        return "/search", {"q": " ".join(rng.sample(WORDS, 3)), "k": rng.choice([5, 20, 100])}
    if kind == "text_negative":
        params = {"q": rng.choice(WORDS), "negative": rng.sample(WORDS, 4), "min_width": 10}
        return "/search", params
    if kind == "similar":
        return f"/search/similar/{rng.choice(ids)}", {"k": 10}
    if kind in ("thumbnail", "image"):
        return f"/{kind}s/{rng.choice(ids)}", {}
    return rng.choice(HOSTILE), {}


async def uploads(http: httpx.AsyncClient, n: int, tally: Tally) -> None:
    bodies = upload_bodies()
    kinds = list(bodies)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        data, expected = bodies[kind]
        try:
            response = await http.post("/search/image", files={"file": ("u.png", data)})
            status = response.status_code
        except httpx.HTTPError as exc:  # a server may close an oversized upload's connection
            status = type(exc).__name__
        tally.record(f"upload_{kind}", status)
        if status not in (expected, 503):
            tally.record("unexpected", f"upload_{kind}:{status}")


async def reindex(http: httpx.AsyncClient, workdir: Path, plan: Plan, tally: Tally) -> None:
    await asyncio.sleep(2.0)  # in the middle of the traffic
    write_photos(workdir / "photos", plan.new_images, start=10_000)
    start = time.perf_counter()
    try:
        response = await http.post("/reindex", headers={"X-API-Key": KEY}, timeout=None)
    except httpx.TransportError as exc:
        tally.record("reindex", type(exc).__name__)
        return
    finally:
        tally.reindex_window = (start, time.perf_counter())
    tally.record("reindex", response.status_code)
    tally.reindex = {**response.json(), "request_seconds": round(time.perf_counter() - start, 2)}


async def traffic(url: str, workdir: Path, plan: Plan, tally: Tally) -> None:
    limits = httpx.Limits(max_connections=plan.clients * 2 + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        ids = [r["id"] for r in (await http.get("/search?q=photo&k=100")).json()["results"]]
        per_client = plan.searches // plan.clients
        jobs = [searches(http, per_client, ids, tally) for _ in range(plan.clients)]
        jobs += [uploads(http, plan.uploads // 2, tally) for _ in range(2)]
        jobs.append(reindex(http, workdir, plan, tally))
        await asyncio.wait_for(asyncio.gather(*jobs), plan.time_limit_s)


def run(model, spec: dict, plan: Plan, workdir: Path) -> dict:
    """Build the index, start the server, run the traffic, stop it; the summary."""
    db = build_index(workdir, model, spec, plan)
    log = workdir / "server.log"
    proc, url = start_server(db, log)
    tally = Tally()
    ctx = multiprocessing.get_context("fork")  # the child runs httpx only
    done, (results, sender) = ctx.Event(), ctx.Pipe(duplex=False)
    watcher = ctx.Process(target=monitor, args=(url, proc.pid, done, sender), daemon=True)
    started = time.perf_counter()
    watcher.start()
    try:
        asyncio.run(traffic(url, workdir, plan, tally))
    finally:
        done.set()
        statuses, tally.health_ms, tally.health_at, tally.rss_kib = results.recv()
        tally.statuses["health"].update(statuses)
        watcher.join(10)
        seconds = time.perf_counter() - started
        stop_start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            proc.kill()
    out = summary(tally, seconds, time.perf_counter() - stop_start, proc.returncode)
    text = log.read_text(errors="replace")
    out["server_tracebacks"] = text.count("Traceback")
    out["server_log_problems"] = [
        line for line in text.splitlines() if line and not line.startswith("INFO")
    ][-20:]
    return out


def summary(tally: Tally, seconds: float, stop_s: float, code: int | None) -> dict:
    health = np.asarray(tally.health_ms or [0.0])
    at = np.asarray(tally.health_at or [0.0])
    during = health[(at >= tally.reindex_window[0]) & (at <= tally.reindex_window[1])]
    statuses = {kind: dict(counts) for kind, counts in sorted(tally.statuses.items())}
    all_codes = Counter()
    for counts in tally.statuses.values():
        all_codes.update(counts)
    return {
        "seconds": round(seconds, 1),
        "requests": {kind: sum(c.values()) for kind, c in statuses.items()},
        "statuses": statuses,
        "status_totals": dict(sorted(all_codes.items())),
        "server_5xx": sum(n for s, n in all_codes.items() if s.startswith("5") and s != "503"),
        "busy_503": all_codes.get("503", 0),
        "health_ms": {
            "n": len(tally.health_ms),
            "p50": round(float(np.percentile(health, 50)), 2),
            "p99": round(float(np.percentile(health, 99)), 2),
            "max": round(float(health.max()), 2),
            "n_during_reindex": len(during),
            "max_during_reindex": round(float(during.max()), 2) if len(during) else None,
            "slowest": sorted(round(float(x), 1) for x in health)[-5:],
        },
        "rss_mib": {
            "start": round(tally.rss_kib[0][0] / 1024, 1),
            "peak": round(max(r[0] for r in tally.rss_kib) / 1024, 1),
            "peak_with_reindex_child": round(max(sum(r) for r in tally.rss_kib) / 1024, 1),
        },
        "reindex": tally.reindex,
        "sigterm_exit_s": round(stop_s, 2),
        "exit_code": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="ViT-B-32", help="random-weight architecture")
    for name, default in Plan().__dict__.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args()
    import torch

    import clipforge

    torch.manual_seed(0)  # the model `clipforge serve --model ARCH` recreates
    model = clipforge.create_model(args.arch).eval()
    spec = {"model": args.arch, "weights": None, "pretrained": None}
    plan = Plan(**{k: getattr(args, k) for k in Plan().__dict__})
    with tempfile.TemporaryDirectory(prefix="serve-faults-") as tmp:
        print(json.dumps(run(model, spec, plan, Path(tmp)), indent=2))


if __name__ == "__main__":
    main()
