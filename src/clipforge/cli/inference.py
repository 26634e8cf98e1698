"""Inference commands: classify, embed, similarity, score."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from ..embedding_io import write_embeddings
from .common import (
    BATCH,
    JSON,
    WORKERS,
    ModelChoice,
    cell,
    console,
    display,
    err_console,
    expand_images,
    fail_if_empty,
    model_options,
    print_json,
    print_quantization,
    quantization_json,
    read_lines,
    report_failures,
)
from .errors import UsageError, warn
from .writers import check_embedding_output, check_writable


@model_options()
def classify(
    images: list[Path] = typer.Argument(..., help="Image files, directories or quoted globs."),
    labels: str = typer.Option(..., "--labels", "-l", help="Comma-separated class names."),
    templates: str = typer.Option(
        "openai_imagenet",
        "--templates",
        "-t",
        help="openai_imagenet | simple | cifar10 | cifar100 | FILE",
    ),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1),
    batch_size: int = BATCH,
    workers: int = WORKERS,
    as_json: bool = JSON,
    *,
    choice: ModelChoice,
) -> None:
    """Zero-shot classification of images among --labels."""
    from clipforge.zeroshot import ZeroShotClassifier

    classnames = [c.strip() for c in labels.split(",") if c.strip()]
    if len(classnames) < 2:
        raise typer.BadParameter("give at least two labels", param_hint="--labels")
    prompts = _templates(templates)
    paths = expand_images(images)
    clip = choice.load()
    classifier = ZeroShotClassifier(clip, classnames, templates=prompts, precision=choice.autocast)
    result = classifier.predict(
        paths,
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
    _print_predictions(rows, result.failures, as_json, quantization_json(clip))
    report_failures(result.failures)
    fail_if_empty(len(paths))


def _print_predictions(rows: list[dict], failures: list[tuple[str, str]], as_json: bool,
                       extra: dict) -> None:  # fmt: skip
    if as_json:
        for row in rows:
            row["path"] = display(row["path"])
        shown = [[display(p), reason] for p, reason in failures]
        print_json({"predictions": rows, "failures": shown, **extra})
        return
    table = Table("image", "prediction", "top-k")
    for row in rows:
        best = row["top_k"][0]
        rest = ", ".join(f"{t['label']} {t['prob']:.2f}" for t in row["top_k"][1:])
        table.add_row(cell(row["path"]), f"{best['label']} ({best['prob']:.2f})", rest)
    console.print(table)


def _templates(value: str) -> list[str]:
    """The --templates prompts (a set name, a file, or one template with {c})."""
    from clipforge.zeroshot import get_templates

    path = Path(value)
    try:
        return get_templates(path if path.is_file() else value)
    except UnicodeDecodeError:
        raise UsageError(f"--templates {value}: not UTF-8 text; save it as UTF-8") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"--templates: {err}") from None


@model_options()
def embed(
    inputs: list[Path] = typer.Argument(None, help="Image files, directories or quoted globs."),
    texts: Path = typer.Option(None, "--texts", help="UTF-8 text file: one text per line."),
    output: Path = typer.Option(..., "--output", "-o", help="out.npy or out.parquet"),
    batch_size: int = BATCH,
    workers: int = WORKERS,
    engine: str = typer.Option(
        "local", "--engine", help="local | ray (Ray Data; -o is a folder of Parquet shards)."
    ),
    address: str = typer.Option(None, "--address", help="Ray cluster address (ray: 'auto')."),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="Images per shard (ray)."),
    *,
    choice: ModelChoice,
) -> None:
    """Embed images (or --texts) and write them with their paths/ids alongside."""
    from clipforge.embedding import embed_images, embed_texts

    if bool(inputs) == bool(texts):
        raise typer.BadParameter("give either images/directories or --texts FILE")
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine must be local or ray, got {engine!r}")
    if engine == "ray":
        _embed_ray(inputs, output, choice, batch_size, address, shard_size)
        return
    check_embedding_output(output)  # before any work: a bad --output must not lose the run
    failures: list[tuple[str, str]] = []
    if texts:
        ids = read_lines(texts)
        n_inputs = len(ids)
        clip = choice.load()
        vectors = embed_texts(clip, ids, precision=choice.autocast)
    else:
        paths = expand_images(inputs)
        n_inputs = len(paths)
        _warn_undecodable_names(paths)
        clip = choice.load()
        result = embed_images(
            clip,
            paths,
            batch_size=batch_size,
            num_workers=workers,
            progress=None,
            precision=choice.autocast,
        )
        ids, vectors, failures = (
            [display(p) for p in result.paths],
            result.embeddings,
            result.failures,
        )
    written = write_embeddings(output, ids, vectors)
    names = " and ".join(str(p) for p in written)
    err_console.print(f"wrote {len(ids)} embeddings of dim {vectors.shape[1]} to {names}")
    report_failures(failures)
    fail_if_empty(n_inputs)


def _embed_ray(inputs: list[Path] | None, output: Path, choice: ModelChoice, batch_size: int,
               address: str | None, shard_size: int) -> None:  # fmt: skip
    """``--engine ray``: one SOURCE (folder, CSV or Parquet list) to Parquet shards; int8 is
    measured (``--calibration``) and refused (``--max-degradation``) as on the local path."""
    try:
        import ray  # noqa: F401
    except ImportError as err:
        raise UsageError(f"--engine ray needs Ray: pip install 'clipforge[ray]' ({err})") from err
    from clipforge.distributed import embed as ray_embed

    if not inputs or len(inputs) != 1:
        raise typer.BadParameter("--engine ray takes one SOURCE: a folder, .csv or .parquet")
    precision = choice.autocast
    report = ray_embed(inputs[0], output, model=choice.weights or choice.model,
                       pretrained=choice.pretrained,
                       precision=None if precision == "fp32" else precision,
                       calibration=choice.calibration, max_degradation=choice.max_degradation,
                       batch_size=batch_size, address=address, shard_size=shard_size)  # fmt: skip
    print_quantization(report.quantization, choice.calibration, choice.max_degradation)
    err_console.print(
        f"wrote {report.n_embedded} embeddings in {len(report.written)} shard(s) to {output} "
        f"({len(report.skipped)} finished shard(s) skipped)"
    )
    report_failures(report.failures)


def _warn_undecodable_names(paths: list[str]) -> None:
    bad = [p for p in paths if display(p) != p]
    if bad:
        warn(
            f"{len(bad)} file name(s) are not valid UTF-8; their ids show the raw bytes "
            f"as \\xNN (e.g. {display(bad[0])})"
        )


def _nan_to_none(values: list) -> list:
    """A list (of lists) of floats with NaN as ``None`` (valid JSON)."""
    return [
        _nan_to_none(v) if isinstance(v, list) else (None if math.isnan(v) else v) for v in values
    ]


@model_options()
def similarity(
    images: list[Path] = typer.Option(..., "--images", "-i", help="Image files or directories."),
    texts: list[str] = typer.Option(..., "--texts", "-t", help="Texts (repeat the option)."),
    plot: Path = typer.Option(None, "--plot", help="Write a heat-map PNG."),
    as_json: bool = JSON,
    *,
    choice: ModelChoice,
) -> None:
    """Cosine similarity matrix of images × texts (and an optional heat-map).

    Unreadable images are reported (exit code 1) and every other one is still scored."""
    from clipforge.scoring import plot_similarity, similarity_matrix

    if plot is not None:
        check_writable(plot, "--plot")
    paths = expand_images(images)
    clip = choice.load()
    failures: list[tuple[str, str]] = []
    sim = similarity_matrix(clip, paths, texts, failures=failures, precision=choice.autocast)
    if plot is not None and paths:
        bad = {p for p, _ in failures}
        columns = [f"{Path(display(p)).name} (unreadable)" if p in bad else Path(p) for p in paths]
        plot_similarity(sim, columns, texts, plot)
    if as_json:
        shown = [display(p) for p in paths]
        print_json({"images": shown, "texts": texts, "similarity": _nan_to_none(sim.tolist()),
                    **quantization_json(clip)})  # fmt: skip
    else:
        table = Table("image", *texts)
        for path, row in zip(paths, sim, strict=True):
            table.add_row(cell(path), *(_signed(v) for v in row))
        console.print(table)
    report_failures(failures)
    fail_if_empty(len(paths))


def _signed(value: float) -> str:
    return "unreadable" if math.isnan(value) else f"{value:+.3f}"


@model_options()
def score(
    images: list[Path] = typer.Option(..., "--images", "-i", help="Image files, one per text."),
    texts: list[str] = typer.Option(..., "--texts", "-t", help="Captions, one per image."),
    as_json: bool = JSON,
    *,
    choice: ModelChoice,
) -> None:
    """CLIP score of each (image, caption) pair: max(100·cos, 0).

    Unreadable images are reported (exit code 1) and every other pair is still scored."""
    import numpy as np

    from clipforge.scoring import clip_score

    paths = [str(p) for p in images]
    if len(paths) != len(texts):
        raise typer.BadParameter(
            f"{len(paths)} images but {len(texts)} texts: give one text per image"
        )
    clip = choice.load()
    failures: list[tuple[str, str]] = []
    scores = clip_score(clip, paths, texts, failures=failures, precision=choice.autocast)
    finite = scores[np.isfinite(scores)]
    mean = float(finite.mean()) if len(finite) else float("nan")
    if as_json:
        print_json(
            {"scores": _nan_to_none(scores.tolist()), "mean": None if math.isnan(mean) else mean,
             **quantization_json(clip)}
        )
    else:
        table = Table("image", "text", "CLIP score")
        for path, text, value in zip(paths, texts, scores, strict=True):
            table.add_row(cell(path), text, "unreadable" if math.isnan(value) else f"{value:.2f}")
        console.print(table)
        console.print(f"mean CLIP score: {mean:.2f}")
    report_failures(failures)


def register(app: typer.Typer) -> None:
    for command in (classify, embed, similarity, score):
        app.command()(command)
