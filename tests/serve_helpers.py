"""Real service processes on 127.0.0.1 for the serve tests: start, wait, stop, measure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import clipforge
from tests.conftest import REPO

SLOW_ENV = "CLIPFORGE_TEST_SLOW_S"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """``python ARGS --port P`` from the repository root; waits until /health answers."""
    port = free_port()
    src = Path(clipforge.__file__).parents[1]  # the clipforge these tests import
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{REPO}", **(env or {})}
    proc = subprocess.Popen([sys.executable, *args, "--port", str(port)], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        assert time.monotonic() < deadline, "server did not come up"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size field (VmSize, VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def slow_hook(module, args) -> None:
    """A forward pre-hook making the image tower slow (seconds from ``SLOW_ENV``)."""
    time.sleep(float(os.environ.get(SLOW_ENV, "0")))
