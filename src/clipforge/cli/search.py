"""Search commands: ``clipforge index``, ``clipforge search``, ``clipforge serve``."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from .common import (
    BATCH,
    JSON,
    MODEL_OPTIONS,
    WORKERS,
    err_console,
    options_of,
    print_json,
)

DB = typer.Option(..., "--db", help="Index directory (created by `clipforge index`).")
SEARCH_MODEL = typer.Option(
    None, "--model", "-m", help="Architecture or checkpoint (default: the one that built --db)."
)


PRECISION_OPT = typer.Option(
    None, "--precision", help="fp32 | bf16 | fp16 | int8 | auto (default: the index's own)."
)
ALLOW_MISMATCH = typer.Option(
    False,
    "--allow-precision-mismatch",
    help="Query the index at another precision than it was built at.",
)


@dataclass(frozen=True)
class IndexModel:
    """``--model --weights --pretrained --precision --allow-precision-mismatch`` (and, for
    commands that may quantise, ``--calibration --max-degradation``) of the index commands;
    ``None``: what the index records."""

    model: str | None = None
    weights: Path | None = None
    pretrained: str | None = None
    precision: str | None = None
    allow_precision_mismatch: bool = False
    calibration: Path | None = None
    max_degradation: float | None = None

    def open(self, db: Path, **kwargs: Any) -> Any:
        """The index at ``db`` with this model and precision (see :func:`_open`)."""
        return _open(
            db, self.model, self.weights, self.pretrained, precision=self.precision,
            allow_precision_mismatch=self.allow_precision_mismatch,
            calibration=self.calibration, max_degradation=self.max_degradation, **kwargs,
        )  # fmt: skip


#: the model flags of the other commands, but defaulting to the index's own, plus
#: ``--allow-precision-mismatch`` (name -> (annotation, typer option))
_INDEX_MODEL: dict[str, tuple[Any, Any]] = {
    **{n: o for n, o in MODEL_OPTIONS.items() if n != "device"},
    "model": (str, SEARCH_MODEL),
    "precision": (str, PRECISION_OPT),
    "allow_precision_mismatch": (bool, ALLOW_MISMATCH),
}


def index_model_options(*, quantization: bool = True) -> Any:
    """Decorator: a command's keyword-only ``choice: IndexModel`` parameter becomes these
    flags (``--calibration --max-degradation`` only with ``quantization``)."""
    quantizing = ("calibration", "max_degradation")
    table = {n: o for n, o in _INDEX_MODEL.items() if quantization or n not in quantizing}
    return options_of(table, IndexModel)


def _open(db: Path, model: str | None, weights: Path | None, pretrained: str | None, **kwargs):
    """Open the index with the given model, or with the one recorded in it.

    ``create=False`` (read commands): a directory without an index is refused."""
    import clipforge
    from clipforge.index import ModelMismatchError, PrecisionMismatchError, require_index

    from .common import load_model

    if not kwargs.get("create", True):
        require_index(db)
    spec = None
    if model is None:
        if not (db / "metadata.sqlite").exists():
            model = "ViT-B-32"
        else:
            from clipforge.index.metadata import MetadataStore

            meta = MetadataStore(db / "metadata.sqlite")
            recorded = json.loads(meta.get_meta("model_spec") or "{}")
            meta.close()
            if not recorded.get("model"):
                raise typer.BadParameter(
                    "this index records no model: pass --model", param_hint="--model"
                )
            model, weights = recorded["model"], recorded.get("weights")
            pretrained = recorded.get("pretrained")
    weights = None if weights is None else Path(weights).absolute()
    spec = {"model": model, "weights": weights and str(weights), "pretrained": pretrained}
    quantization = {k: kwargs.pop(k) for k in ("calibration", "max_degradation") if k in kwargs}
    try:
        index = clipforge.Index.open(
            db, load_model(str(model), weights, pretrained), model_spec=spec, **kwargs
        )
        if index.precision == "int8":  # measured (and refused) before any work
            from clipforge.quantization import prepare_int8, report_of

            report = report_of(prepare_int8(index.model, **quantization))
            err_console.print(report.summary() if report else "int8")
        return index
    except PrecisionMismatchError:
        raise  # one `error:` line from the CLI's handler
    except ModelMismatchError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(code=2) from err


def _bytes(text: str | None) -> int | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if match is None:
        raise typer.BadParameter(
            f"not a size: {text!r} (e.g. 2GB, 512MB)", param_hint="--max-memory"
        )
    return int(float(match[1]) * 1024 ** " kmgt".index(match[2] or " "))


@index_model_options()
def index(
    dirs: list[Path] = typer.Argument(None, help="Folders (or files) of images to index."),
    db: Path = DB,
    errors: bool = typer.Option(False, "--errors", help="List files that could not be indexed."),
    index_type: str = typer.Option(
        None, "--index-type", help="auto|flat|ivf|ivfpq|hnsw (default: as before, else auto)"
    ),
    max_memory: str = typer.Option(None, "--max-memory", help="Index memory budget, e.g. 4GB."),
    target_recall: float = typer.Option(
        None, "--target-recall", min=0.0, max=1.0, help="recall@10 to tune for (0.95)"
    ),
    backend: str = typer.Option(
        "faiss",
        "--backend",
        help="faiss | milvus, for a new index (Milvus server: set "
        "CLIPFORGE_MILVUS_URI, else milvus-lite in --db)",
    ),
    prune_missing: bool = typer.Option(
        False, "--prune-missing", help="Remove the rows of folders that are gone."
    ),
    rehash: bool = typer.Option(
        False, "--rehash", help="Re-hash unchanged-looking files; re-embed changed bytes."
    ),
    wait: float = typer.Option(
        None, "--wait", help="Seconds to wait for another writer of --db (default: none)."
    ),
    watch: bool = typer.Option(
        False, "--watch", help="Then keep the index current as files change (Ctrl-C stops)."
    ),
    debounce: float = typer.Option(
        0.5, "--debounce", min=0.01, max=60.0, help="--watch: quiet seconds before updating."
    ),
    ocr: bool = typer.Option(
        None,
        "--ocr/--no-ocr",
        help="Read text in images too (needs clipforge[ocr]); "
        "remembered for later runs (default: as before).",
    ),
    batch_size: int = BATCH,
    workers: int = WORKERS,
    as_json: bool = JSON,
    *,
    choice: IndexModel,
) -> None:
    """Index images and videos incrementally: new/changed files embedded, deleted ones
    dropped; with --watch, kept current as files are added, changed, moved and deleted."""
    from clipforge.index import StoreOptions
    from clipforge.index.photos import summary_line

    options = None  # keep the index's recorded options unless one is given
    if (index_type, max_memory, target_recall) != (None, None, None):
        options = StoreOptions(index_type or "auto", _bytes(max_memory), target_recall or 0.95)
    if errors:
        with _open(db, choice.model, choice.weights, choice.pretrained, create=False) as idx:
            failed = idx.errors()
        if as_json:
            print_json([{"path": p, "reason": r} for p, r in failed])
        for path, reason in [] if as_json else failed:
            typer.echo(f"{path}\t{reason}")
        if failed and not as_json:
            err_console.print(summary_line(failed), highlight=False, markup=False, soft_wrap=True)
        return
    if not dirs:
        raise typer.BadParameter("give folders to index (or --errors)", param_hint="DIRS")
    opened = choice.open(db, options=options, backend=backend, lock_timeout=wait or 0)
    if watch:
        _watch(opened, dirs, debounce, as_json, rehash=rehash, batch_size=batch_size,
               num_workers=workers, progress=False, ocr=ocr)  # fmt: skip
        return
    with opened as idx:
        report = idx.sync(
            dirs, prune_missing=prune_missing, rehash=rehash, batch_size=batch_size, num_workers=workers,
            progress=None, ocr=ocr,
        )  # fmt: skip
        info = idx.info()
    if as_json:
        print_json({"report": report.to_dict(), "index": info})
        return
    done = report.added + report.replaced
    rate = done / report.seconds if report.seconds else 0.0
    typer.echo(
        f"added {report.added}, re-embedded {report.replaced}, renamed {report.renamed}, "
        f"removed {report.removed}, duplicates {report.duplicates}, unchanged "
        f"{report.unchanged}, failed {len(report.failed)} in {report.seconds:.1f} s "
        f"({rate:.1f} images/s); {info['images']} images, index {info['store']}"
    )
    if report.videos:
        typer.echo(video_summary(report))
    if report.ocr_read or report.ocr_failed:
        typer.echo(
            f"read text in {report.ocr_read} images in {report.ocr_seconds:.1f} s "
            f"({len(report.ocr_failed)} failed)"
        )
    if report.failed:
        err_console.print(f"[yellow]{len(report.failed)} file(s) failed: see --errors[/yellow]")
        err_console.print(
            summary_line(report.failed), highlight=False, markup=False, soft_wrap=True
        )


def _watch(idx, dirs: list[Path], debounce: float, as_json: bool, **add_options) -> None:
    """``clipforge index --watch``: one line (or JSON object) per update until Ctrl-C."""
    from clipforge.index.watch import WatchOptions, watch

    def show(report) -> None:
        if as_json:
            typer.echo(json.dumps(report.to_dict()))
            return
        changed = report.added + report.replaced + report.renamed + report.removed
        typer.echo(
            f"{time.strftime('%H:%M:%S')} added {report.added}, re-embedded {report.replaced}, "
            f"renamed {report.renamed}, removed {report.removed}, failed {len(report.failed)}"
            f"; {len(idx)} indexed" + ("" if changed or report.failed else " (no change)")
        )
        if report.videos:
            typer.echo(video_summary(report))

    err_console.print(f"watching {', '.join(map(str, dirs))} — Ctrl-C stops")
    with idx:
        options = WatchOptions(debounce_s=debounce, max_delay_s=max(10.0, debounce))
        watch(idx, dirs, options=options, on_update=show, **add_options)
    err_console.print("stopped watching")


def video_summary(report) -> str:
    """One line: videos embedded, their length and the speed in seconds per hour of video."""
    count = f"{report.videos} video{'s' if report.videos != 1 else ''}"
    return (
        f"{count} ({report.video_seconds / 60:.1f} min) in {report.video_index_seconds:.1f} s: "
        f"{report.seconds_per_video_hour:.0f} s per hour of video"
    )


@index_model_options(quantization=False)
def search(
    query: str = typer.Argument(None, help="What to look for, in words."),
    db: Path = DB,
    k: int = typer.Option(20, "-k", "--top-k", min=1),
    image: Path = typer.Option(None, "--image", help="Find images similar to this one."),
    negative: list[str] = typer.Option(None, "--negative", help="Push results away from this."),
    text_weight: float = typer.Option(1.0, "--text-weight"),
    image_weight: float = typer.Option(1.0, "--image-weight"),
    negative_weight: float = typer.Option(0.5, "--negative-weight"),
    glob: str = typer.Option(None, "--glob", help="Only paths matching this glob."),
    after: str = typer.Option(
        None, "--after", help="Taken on/after (ISO date; EXIF capture date, else file time)."
    ),
    before: str = typer.Option(None, "--before", help="Taken on/before (ISO date, inclusive)."),
    near: str = typer.Option(None, "--near", help="LAT,LON: only photos taken near here."),
    radius_km: float = typer.Option(10.0, "--radius-km", help="Radius for --near (km)."),
    camera: str = typer.Option(None, "--camera", help="Camera make/model contains this."),
    sort: str = typer.Option("score", "--sort", help="score | date (newest first) | date-asc"),
    min_score: str = typer.Option(
        None, "--min-score", help="Minimum cosine, or 'auto' (per-query outlier cutoff)."
    ),
    min_width: int = typer.Option(None, "--min-width"),
    min_height: int = typer.Option(None, "--min-height"),
    duplicates: bool = typer.Option(False, "--duplicates", help="List near-duplicate groups."),
    threshold: float = typer.Option(0.95, "--threshold", help="Cosine for --duplicates."),
    ocr_only: bool = typer.Option(
        False, "--ocr-only", help="Only images whose recognised text has every query word."
    ),
    no_ocr: bool = typer.Option(False, "--no-ocr", help="CLIP only: ignore recognised text."),
    as_json: bool = JSON,
    *,
    choice: IndexModel,
) -> None:
    """Search an index by text and/or image, with filters; or list near-duplicates."""
    from clipforge.errors import UsageError
    from clipforge.index import Filters
    from clipforge.index.querying import near_duplicates

    if ocr_only and no_ocr:
        raise UsageError("--ocr-only and --no-ocr exclude each other")

    opened = choice.open(db, create=False)
    with opened as idx:
        if duplicates:
            groups = near_duplicates(idx, threshold)
            if as_json:
                print_json(groups)
            for group in [] if as_json else groups:
                typer.echo("\t".join(group))
            return
        if not query and image is None:
            raise typer.BadParameter("give a QUERY, --image, or --duplicates")
        filters = Filters(
            glob, None, None, min_width, min_height, min_score, taken_after=after,
            taken_before=before, near=near, radius_km=radius_km if near else None,
            camera=camera, sort=sort,
        )  # fmt: skip
        hits = idx.search(
            query, image=image, negative=negative, text_weight=text_weight,
            image_weight=image_weight, negative_weight=negative_weight, k=k, filters=filters,
            ocr="only" if ocr_only else "off" if no_ocr else "auto",
        )  # fmt: skip
    if as_json:
        print_json([h.to_dict() for h in hits])
        return
    for hit in hits:
        at = "" if hit.timestamp is None else f" @ {hit.timestamp:.1f} s"
        said = "" if hit.text is None else "\ttext: " + hit.text.text.replace("\n", " / ")[:100]
        taken = f"\t{hit.taken}" if sort != "score" else ""
        typer.echo(f"{hit.score:.4f}\t{hit.path}{at}{taken}{said}")


@index_model_options()
def serve(
    db: Path = DB,
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback by default)."),
    port: int = typer.Option(8000, "--port"),
    api_key: str = typer.Option(
        None, "--api-key", envvar="CLIPFORGE_API_KEY", help="Enables the mutating endpoints."
    ),
    cors: list[str] = typer.Option(None, "--cors-origin", help="Allowed CORS origin (off)."),
    threads: int = typer.Option(
        0, "--threads", help="Text-tower threads (0: one less than the cores, at least 1)."
    ),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.001, max=1024.0),
    max_upload_pixels: int = typer.Option(40_000_000, "--max-upload-pixels", min=1),
    decode_workers: int = typer.Option(
        2, "--decode-workers", min=1, max=64, help="Image decodes at once (uploads, thumbnails)."
    ),
    *,
    choice: IndexModel,
) -> None:
    """Serve the index over HTTP: JSON API, OpenAPI docs at /docs and a web page at /."""
    import os

    from clipforge.runtime import check_precision
    from clipforge.serve import ServeConfig, create_app, run

    idx = choice.open(db)
    config = ServeConfig(
        api_key=api_key or None,
        cors_origins=list(cors or []),
        threads=threads or max(1, (os.cpu_count() or 1) - 1),
        precision=None if choice.precision is None else check_precision(choice.precision),
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_upload_pixels=max_upload_pixels,
        decode_workers=decode_workers,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err_console.print(f"[yellow]serving on {host}: reachable from the network[/yellow]")
    run(create_app(idx, config), host=host, port=port)


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("search")(search)
    app.command("serve")(serve)


__all__ = ["register"]
