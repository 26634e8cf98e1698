"""Benchmark result files: each benchmark writes ``benchmarks/results/<name>.json``.

The documentation site renders its speed figures from these files (``docs/hooks/results.py``),
so a figure in the docs is always one a benchmark wrote, with the command and machine that
produced it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, torch version (and GPU if any)."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    if hasattr(os, "getloadavg"):  # other work on the machine distorts timings: say how much
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # a benchmark without torch still records its machine
        info["torch"] = None
    return info


def command_line() -> str:
    """The exact command that ran, relative to the repository root when possible."""
    argv = list(sys.argv)
    with contextlib.suppress(ValueError):
        argv[0] = str(Path(argv[0]).resolve().relative_to(RESULTS.parent.parent))
    return "python " + shlex.join(argv)


def write_result(name: str, payload: dict[str, Any], folder: Path | None = None) -> Path:
    """Write ``payload`` with command, UTC date and machine to ``<folder>/<name>.json``.

    ``payload["rows"]`` (a list of flat dicts, one per table row) is what the docs render as a
    table; anything else in the payload is kept for readers. The file is replaced atomically.
    """
    folder = RESULTS if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "command": command_line(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        **payload,
    }
    target = folder / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2, default=str)
            handle.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"results written to {target}")
    return target
