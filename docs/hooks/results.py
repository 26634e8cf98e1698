"""MkDocs hook: ``<!-- results: NAME -->`` in a page becomes a table rendered from
``benchmarks/results/NAME.json`` (written by the benchmark), or a "not measured yet" note
naming the command to run when the file is absent."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MARKER = re.compile(r"<!--\s*results:\s*([\w-]+)(?:\s+(.*?))?\s*-->")
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def render(name: str, command: str | None, folder: Path = RESULTS) -> str:
    """Markdown for one marker: the result table with its provenance, or a note."""
    path = folder / f"{name}.json"
    if not path.is_file():
        run = command or f"python benchmarks/{name}.py"
        return f'!!! note "Not measured yet"\n    Run `{run}`: it writes `benchmarks/results/{name}.json`, which this page shows.\n'
    record = json.loads(path.read_text(encoding="utf-8"))
    rows: list[dict[str, Any]] = record.get("rows") or []
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = []
    if columns:
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    m = record.get("machine", {})
    where = f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')}"
    if m.get("load_average_1min") is not None:
        where += f", load average {m['load_average_1min']} at the end"
    if m.get("gpu"):
        where += f", {m['gpu']}"
    lines += [
        "",
        f"*Measured {record.get('date', '?')} on {where}: "
        f"`{record.get('command', '?')}` (`benchmarks/results/{name}.json`).*",
        "",
    ]
    return "\n".join(lines)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace every results marker of a page (MkDocs event)."""
    return MARKER.sub(lambda m: render(m.group(1), m.group(2)), markdown)
