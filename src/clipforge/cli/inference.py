"""Inference commands: classify, embed, similarity, score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .common import (
    BATCH,
    JSON,
    MODEL,
    PRETRAINED,
    WEIGHTS,
    WORKERS,
    expand_images,
    load_model,
    print_json,
    read_lines,
    report_failures,
)

console = Console()


def classify(
    images: list[Path] = typer.Argument(..., help="Image files or directories."),
    labels: str = typer.Option(..., "--labels", "-l", help="Comma-separated class names."),
    templates: str = typer.Option(
        "openai_imagenet",
        "--templates",
        "-t",
        help="openai_imagenet | simple | cifar10 | cifar100 | FILE",
    ),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1),
    model: str = MODEL,
    weights: Path = WEIGHTS,
    pretrained: str = PRETRAINED,
    batch_size: int = BATCH,
    workers: int = WORKERS,
    as_json: bool = JSON,
) -> None:
    """Zero-shot classification of images among --labels."""
    from clipforge.zeroshot import ZeroShotClassifier

    classnames = [c.strip() for c in labels.split(",") if c.strip()]
    if len(classnames) < 2:
        raise typer.BadParameter("give at least two labels", param_hint="--labels")
    clip = load_model(model, weights, pretrained)
    classifier = ZeroShotClassifier(clip, classnames, templates=_templates(templates))
    result = classifier.predict(
        expand_images(images),
        top_k=min(top_k, len(classnames)),
        batch_size=batch_size,
        num_workers=workers,
        progress=None,
    )
    rows = [
        {
            "path": path,
            "top_k": [
                {"label": lab, "prob": float(p)} for lab, p in zip(labels_, scores, strict=True)
            ],
        }
        for path, labels_, scores in zip(
            result.paths, result.top_k_labels, result.top_k_scores, strict=True
        )
    ]
    if as_json:
        print_json({"predictions": rows, "failures": [list(f) for f in result.failures]})
    else:
        table = Table("image", "prediction", "top-k")
        for row in rows:
            best = row["top_k"][0]
            rest = ", ".join(f"{t['label']} {t['prob']:.2f}" for t in row["top_k"][1:])
            table.add_row(row["path"], f"{best['label']} ({best['prob']:.2f})", rest)
        console.print(table)
    report_failures(result.failures)


def _templates(value: str):
    path = Path(value)
    return path if path.is_file() else value


def embed(
    inputs: list[Path] = typer.Argument(None, help="Image files or directories."),
    texts: Path = typer.Option(None, "--texts", help="Text file: one text per line."),
    output: Path = typer.Option(..., "--output", "-o", help="out.npy or out.parquet"),
    model: str = MODEL,
    weights: Path = WEIGHTS,
    pretrained: str = PRETRAINED,
    batch_size: int = BATCH,
    workers: int = WORKERS,
) -> None:
    """Embed images (or --texts) and write them with their paths/ids alongside."""
    from clipforge.embedding import embed_images, embed_texts

    if bool(inputs) == bool(texts):
        raise typer.BadParameter("give either images/directories or --texts FILE")
    if output.suffix not in (".npy", ".parquet"):
        raise typer.BadParameter("output must end in .npy or .parquet", param_hint="--output")
    clip = load_model(model, weights, pretrained)
    failures: list[tuple[str, str]] = []
    if texts:
        ids = read_lines(texts)
        vectors = embed_texts(clip, ids)
    else:
        result = embed_images(
            clip, expand_images(inputs), batch_size=batch_size, num_workers=workers, progress=None
        )
        ids, vectors, failures = [str(p) for p in result.paths], result.embeddings, result.failures
    _write_embeddings(output, ids, vectors)
    console.print(f"wrote {len(ids)} embeddings of dim {vectors.shape[1]} to {output}")
    report_failures(failures)


def _write_embeddings(output: Path, ids: list[str], vectors: np.ndarray) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npy":
        np.save(output, vectors)
        output.with_suffix(".ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    pq.write_table(pa.table({"id": ids, "embedding": column}), output)


def similarity(
    images: list[Path] = typer.Option(..., "--images", "-i", help="Image files or directories."),
    texts: list[str] = typer.Option(..., "--texts", "-t", help="Texts (repeat the option)."),
    plot: Path = typer.Option(None, "--plot", help="Write a heat-map PNG."),
    model: str = MODEL,
    weights: Path = WEIGHTS,
    pretrained: str = PRETRAINED,
    as_json: bool = JSON,
) -> None:
    """Cosine similarity matrix of images × texts (and an optional heat-map)."""
    from clipforge.scoring import plot_similarity, similarity_matrix

    paths = expand_images(images)
    sim = similarity_matrix(load_model(model, weights, pretrained), paths, texts)
    if plot:
        plot_similarity(sim, [Path(p) for p in paths], texts, plot)
    if as_json:
        print_json({"images": paths, "texts": texts, "similarity": sim.tolist()})
        return
    table = Table("image", *texts)
    for path, row in zip(paths, sim, strict=True):
        table.add_row(path, *(f"{v:+.3f}" for v in row))
    console.print(table)


def score(
    images: list[Path] = typer.Option(..., "--images", "-i", help="Image files, one per text."),
    texts: list[str] = typer.Option(..., "--texts", "-t", help="Captions, one per image."),
    model: str = MODEL,
    weights: Path = WEIGHTS,
    pretrained: str = PRETRAINED,
    as_json: bool = JSON,
) -> None:
    """CLIP score of each (image, caption) pair: max(100·cos, 0)."""
    from clipforge.scoring import clip_score

    paths = [str(p) for p in images]
    if len(paths) != len(texts):
        raise typer.BadParameter(
            f"{len(paths)} images but {len(texts)} texts: give one text per image"
        )
    scores = clip_score(load_model(model, weights, pretrained), paths, texts)
    if as_json:
        print_json({"scores": [float(s) for s in scores], "mean": float(np.mean(scores))})
        return
    table = Table("image", "text", "CLIP score")
    for path, text, value in zip(paths, texts, scores, strict=True):
        table.add_row(path, text, f"{value:.2f}")
    console.print(table)
    console.print(f"mean CLIP score: {np.mean(scores):.2f}")


def register(app: typer.Typer) -> None:
    for command in (classify, embed, similarity, score):
        app.command()(command)
