"""Self-contained HTML evaluation reports: every figure a base64 PNG, no external assets.

:func:`write_report` takes ``(record, EvalOutput)`` pairs (as ``clipforge eval`` makes them)
and writes one page: a metrics table per run, and per task a confusion matrix, per-class
recall bars and a similarity heat map (classification), example retrievals with thumbnails,
hits and misses (retrieval), probe examples with their chance levels (caption selection),
the regularisation sweep (linear probe); and training curves from a run directory's
``metrics.jsonl`` when one is given. Figures are drawn with matplotlib (Agg backend).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["render_report", "write_report"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f0f0f0}.thumbs{display:flex;flex-wrap:wrap;gap:10px}
.thumb{width:120px;font-size:11px;text-align:center}
.thumb img{width:96px;height:96px;object-fit:cover;border:4px solid #999}
.hit img{border-color:#2a2}.miss img{border-color:#d22}.ok{color:#2a2}.bad{color:#d22}
figure{display:inline-block;margin:.5em}
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<figure><img alt="figure" src="data:image/png;base64,{data}"></figure>'


def _thumb(image: Any, size: int = 96) -> str:
    """An ``<img>`` of a path or PIL image (a grey box if it cannot be read)."""

    try:
        picture = Image.open(image) if isinstance(image, str | os.PathLike) else image
        picture = picture.convert("RGB")
        picture.thumbnail((size, size))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode()
    except (OSError, ValueError):
        return '<img alt="unreadable">'
    return f'<img alt="thumbnail" src="data:image/png;base64,{data}">'


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _metrics_table(record: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>"
        for k, v in record["metrics"].items()
        if isinstance(v, int | float)
    )
    counts = ", ".join(f"{html.escape(str(k))}: {v}" for k, v in record.get("counts", {}).items())
    return f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table><p>{counts}</p>"


def _classification(details: dict[str, Any]) -> str:
    names = details["classnames"]
    confusion = np.asarray(details["confusion_matrix"])
    labels = names if len(names) <= 40 else []
    fig, ax = _figure(max(4, 0.35 * len(labels) + 2), max(3.5, 0.35 * len(labels) + 1.5))
    ax.imshow(confusion, cmap="Blues")
    ax.set(title="confusion matrix", xlabel="predicted", ylabel="true")
    if labels:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    parts = ["<h3>confusion matrix</h3>", _png(fig)]
    recall = [np.nan if r is None else r for r in details["per_class_recall"]]
    fig, ax = _figure(max(4, 0.25 * len(names) + 2), 3)
    ax.bar(range(len(names)), recall, color="#4a7")
    ax.set(title="per-class accuracy (recall)", ylim=(0, 1))
    if labels:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    parts += ["<h3>per-class accuracy</h3>", _png(fig)]
    sample = np.asarray(details["similarity_sample"])
    fig, ax = _figure(max(4, 0.3 * sample.shape[1] + 2), max(3, 0.3 * len(sample) + 1))
    image = ax.imshow(sample, cmap="viridis", aspect="auto")
    ax.set(title="cosine similarity: sample images × class prompts", xlabel="class")
    ax.set_xticks(range(sample.shape[1]), names[: sample.shape[1]], rotation=90, fontsize=7)
    ax.set_yticks(range(len(sample)), [f"#{i} ({names[y]})" for i, y in
                                       enumerate(details["similarity_rows"])], fontsize=7)  # fmt: skip
    fig.colorbar(image)
    parts += ["<h3>similarity heat map (sample)</h3>", _png(fig)]
    strip = "".join(
        f'<div class="thumb">{_thumb(img)}<br>#{i}</div>'
        for i, img in enumerate(details.get("_similarity_images", []))
    )
    cells = []
    for example, image in zip(
        details["examples"], details.get("_example_images", []), strict=False
    ):
        top = example["top5"]
        hit = top[0] == example["label"]
        cells.append(
            f'<div class="thumb {"hit" if hit else "miss"}">{_thumb(image)}<br>'
            f"true: {html.escape(names[example['label']])}<br>"
            f"predicted: {html.escape(names[top[0]])}</div>"
        )
    return (
        "".join(parts) + "<h4>heat-map images</h4>" + f'<div class="thumbs">{strip}</div>'
        "<h4>examples (green: correct, red: wrong)</h4>"
        + f'<div class="thumbs">{"".join(cells)}</div>'
    )


def _retrieval(details: dict[str, Any]) -> str:
    rows = []
    for query in details.get("image_to_text", []):
        items = "".join(
            f'<li class="{"ok" if hit else "bad"}">{"✓" if hit else "✗"} {html.escape(text)}</li>'
            for text, hit in zip(query["top"], query["hits"], strict=True)
        )
        rows.append(f"<tr><td>{_thumb(query['image'])}</td><td><ol>{items}</ol></td></tr>")
    out = "<h4>image → text (top 5)</h4><table>" + "".join(rows) + "</table>"
    rows = []
    for query in details.get("text_to_image", []):
        images = "".join(
            f'<div class="thumb {"hit" if hit else "miss"}">{_thumb(path)}</div>'
            for path, hit in zip(query["top"], query["hits"], strict=True)
        )
        rows.append(f"<tr><td>{html.escape(query['caption'])}</td>"
                    f'<td><div class="thumbs">{images}</div></td></tr>')  # fmt: skip
    return out + "<h4>text → image (top 5)</h4><table>" + "".join(rows) + "</table>"


def _selection(details: dict[str, Any], metrics: dict[str, float]) -> str:
    probes = sorted({k[: -len("_acc")] for k in metrics if k.endswith("_acc") and k != "acc"})
    fig, ax = _figure(4, 3)
    ax.bar(probes, [metrics[f"{p}_acc"] for p in probes], color="#47a", label="model")
    ax.plot(probes, [metrics[f"{p}_chance"] for p in probes], "r--o", label="chance")
    ax.set(ylim=(0, 1), title="caption selection accuracy")
    ax.legend()
    cells = [
        f'<div class="thumb {"hit" if e["correct"] else "miss"}">{_thumb(img)}<br>'
        + "<br>".join(f"{html.escape(c)} ({s:.3f})" for c, s in zip(e["captions"], e["scores"], strict=True))
        + "</div>"
        for e, img in zip(details["examples"], details.get("_example_images", []), strict=False)
    ]  # fmt: skip
    return (
        _png(fig)
        + "<p>first caption: the true one</p>"
        + f'<div class="thumbs">{"".join(cells)}</div>'
    )


def _probe_sweep(details: dict[str, Any]) -> str:
    sweep = details.get("sweep") or []
    if not sweep:
        return "<p>no validation sweep (too few images per class)</p>"
    values, accs = zip(*sweep, strict=True)
    fig, ax = _figure(4.5, 3)
    ax.semilogx(values, accs, "o-")
    ax.axvline(details["best"], color="r", linestyle="--")
    ax.set(xlabel=details["regulariser"], ylabel="validation acc1", title="regularisation sweep")
    return _png(fig)


def _training_curves(run_dir: Path) -> str:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]  # fmt: skip
    steps = [r for r in records if "step" in r]
    keys = sorted({k for r in steps for k, v in r.items()
                   if isinstance(v, int | float) and k not in ("step", "epoch")})  # fmt: skip
    parts = []
    for key in keys[:12]:
        points = [(r["step"], r[key]) for r in steps if key in r]
        if len(points) < 1:
            continue
        fig, ax = _figure(3.5, 2.5)
        ax.plot(*zip(*points, strict=True), "o-", markersize=3)
        ax.set(title=key, xlabel="step")
        parts.append(_png(fig))
    return "<h2>training curves</h2>" + "".join(parts)


def _section(record: dict[str, Any], output: Any) -> str:
    task, details = record["task"], output.details
    head = (f"<h2>{html.escape(task)} — {html.escape(str(record['dataset']))} — "
            f"{html.escape(str(record['model']))}</h2>")  # fmt: skip
    body = _metrics_table(record)
    if task == "zeroshot_classification" and "confusion_matrix" in details:
        body += _classification(details)
    elif task == "zeroshot_retrieval":
        body += _retrieval(details)
    elif task == "image_caption_selection":
        body += _selection(details, output.metrics)
    elif task == "linear_probe":
        body += _probe_sweep(details)
    if output.failures:
        items = "".join(f"<li>{html.escape(str(a))}: {html.escape(str(b))}</li>"
                        for a, b in output.failures[:50])  # fmt: skip
        body += f"<h4>{len(output.failures)} unreadable input(s), excluded</h4><ul>{items}</ul>"
    return head + body


def render_report(
    runs: Sequence[tuple[dict[str, Any], Any]], run_dir: str | os.PathLike | None = None
) -> str:
    """The report page as a string (see the module docstring)."""
    sections = [_section(record, output) for record, output in runs]
    if run_dir is not None and (Path(run_dir) / "metrics.jsonl").exists():
        sections.append(_training_curves(Path(run_dir)))
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>clipforge evaluation</title>'
        f"<style>{_STYLE}</style></head><body><h1>clipforge evaluation</h1>"
        + "".join(sections)
        + "</body></html>\n"
    )


def write_report(
    runs: Sequence[tuple[dict[str, Any], Any]],
    path: str | os.PathLike,
    run_dir: str | os.PathLike | None = None,
) -> Path:
    """Write :func:`render_report` to ``path``."""
    path = Path(path)
    path.write_text(render_report(runs, run_dir), "utf-8")
    return path
