"""Results files in CLIP_benchmark's shape, and tables merging several of them.

A record is ``{"dataset", "model", "pretrained", "task", "metrics"}`` (as CLIP_benchmark
writes) plus ``checkpoint_sha256``, ``counts``, ``failures``, ``timing``, ``versions``,
``options`` and ``details`` (report material). :func:`merge` reads many records and
:func:`write_table` writes them as CSV, Markdown or JSON (one row per record).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__

__all__ = [
    "CLIP_BENCHMARK_ALIASES",
    "checkpoint_hash",
    "make_record",
    "merge",
    "table_rows",
    "to_jsonable",
    "versions",
    "write_table",
]

#: Our metric names → CLIP_benchmark's, added to retrieval records for its tools.
CLIP_BENCHMARK_ALIASES = {
    "image_to_text_R@{k}": "text_retrieval_recall@{k}",
    "text_to_image_R@{k}": "image_retrieval_recall@{k}",
}


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy types as Python ones; dict keys starting with ``_`` dropped."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def checkpoint_hash(path: str | os.PathLike | None) -> str | None:
    """SHA-256 of a checkpoint file, or of a directory's files in sorted order."""
    if path is None or not Path(path).exists():
        return None
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with open(file, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python, torch, numpy and clipforge."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "clipforge": __version__,
    }


def _aliases(metrics: dict[str, float]) -> dict[str, float]:
    out = dict(metrics)
    for ours, theirs in CLIP_BENCHMARK_ALIASES.items():
        prefix = ours.split("{k}")[0]
        for key, value in metrics.items():
            if key.startswith(prefix) and key[len(prefix) :].isdigit():
                out[theirs.format(k=key[len(prefix) :])] = value
    return out


def make_record(
    *,
    task: str,
    dataset: str,
    model: str,
    pretrained: str | None,
    output: Any,
    checkpoint: str | os.PathLike | None = None,
    seconds: float | None = None,
    options: dict[str, Any] | None = None,
    precision: str = "fp32",
    quantization: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One results record (see the module docstring) from an ``EvalOutput``; ``precision``
    and (int8) the model's ``quantization`` report (cosines vs fp32) are recorded too."""
    evaluated = output.counts.get("evaluated") or output.counts.get("test") or 0
    extra = {"quantization": quantization} if quantization is not None else {}
    return to_jsonable(
        {
            "dataset": dataset,
            "model": model,
            "pretrained": pretrained or "",
            "task": task,
            "precision": precision,
            **extra,
            "metrics": _aliases(output.metrics),
            "checkpoint_sha256": checkpoint_hash(checkpoint),
            "counts": output.counts,
            "failures": [list(f) for f in output.failures],
            "timing": {
                "seconds": seconds,
                "images_per_second": evaluated / seconds if seconds and evaluated else None,
            },
            "versions": versions(),
            "options": options or {},
            "details": output.details,
        }
    )


def merge(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """The records of several results files (each a record or a list of records)."""
    records: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(Path(path).read_text("utf-8"))
        for record in data if isinstance(data, list) else [data]:
            missing = {"dataset", "model", "task", "metrics"} - set(record)
            if missing:
                raise ValueError(f"{path}: not a results file (no {sorted(missing)})")
            records.append(record)
    return records


def _language_groups(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A record's per-language results (``details.per_language``), or ``{}``."""
    groups = (record.get("details") or {}).get("per_language")
    return groups if isinstance(groups, dict) else {}


def table_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, rows)``: model, pretrained, dataset, task, precision (when any record is
    not fp32), then every metric seen. A record with per-language results (a retrieval table
    with a ``language`` column) adds a ``language`` column: its overall row is ``all``,
    followed by one row per language."""
    expanded: list[tuple[dict[str, Any], str | None, dict[str, Any]]] = []
    for record in records:
        groups = _language_groups(record)
        expanded.append((record, "all" if groups else None, record["metrics"]))
        expanded.extend((record, lang, group["metrics"]) for lang, group in groups.items())
    metric_names: list[str] = []
    for _, _, metrics in expanded:
        metric_names.extend(m for m in metrics if m not in metric_names)
    keys = ["model", "pretrained", "dataset", "task"]
    if any(record.get("precision", "fp32") != "fp32" for record in records):
        keys.append("precision")
    languages = any(lang is not None for _, lang, _ in expanded)
    columns = [*keys[:3], *(["language"] if languages else []), *keys[3:], *metric_names]
    rows = [
        {
            **{c: record.get(c, "fp32" if c == "precision" else "") for c in keys},
            **({"language": lang or ""} if languages else {}),
            **{m: metrics.get(m, "") for m in metric_names},
        }
        for record, lang, metrics in expanded
    ]
    return columns, [{c: row[c] for c in columns} for row in rows]


def _markdown(columns: list[str], rows: list[dict[str, Any]]) -> str:
    def fmt(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(records: Sequence[dict[str, Any]], path: str | os.PathLike) -> str:
    """Write ``records`` as ``.csv``, ``.md`` or ``.json`` (by suffix); returns the text."""
    columns, rows = table_rows(records)
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    elif suffix in (".md", ".markdown"):
        text = _markdown(columns, rows)
    elif suffix == ".json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        raise ValueError(f"table {os.fspath(path)!r}: use a .csv, .md or .json file name")
    Path(path).write_text(text, "utf-8")
    return text
