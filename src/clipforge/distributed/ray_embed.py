"""Embed an image collection with Ray Data: decode in CPU tasks, encode in an actor pool.

Output layout of ``output/``::

    shard-00000.parquet   id, path, path_bytes, embedding (float32 list), model — one row
                          per good image (``path_bytes``: the exact file name bytes;
                          ``path``/``id`` show bytes that are not UTF-8 as ``\\xNN``)
    ...
    manifest.json         model, source, shard size, and per finished shard: rows, failures
                          (an int8 run: ``precision`` and the ``quantization`` report)

Items are cut into shards of ``shard_size`` in source order. A shard's Parquet file is
written under a temporary name and renamed, then recorded in the manifest, so a re-run skips
every shard the manifest lists and redoes only the rest. Ray streams the rows (in order, so
shards complete one after another and memory stays bounded); a worker that dies is
restarted by Ray and its batch retried, and only completed batches reach the output, so each
good image is written exactly once.

``precision="int8"``: the driver makes the int8 copy once, before Ray starts, measuring it
on ``calibration`` and refusing it above ``max_degradation`` (or warning) exactly as the
local path does; the encoders run the same int8 copy with that report, unmeasured.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image

from ..api import load as load_model
from ..atomic import write_atomic, write_text_atomic
from ..embedding import _failure_reason, _to_pixels, stream_image_embeddings
from ..errors import UsageError
from ..models import CLIP
from ..quantization import QuantizationReport, apply_precision, quantize_as, report_of
from ..runtime import Precision, check_precision, resolve_precision
from .sources import list_source

__all__ = ["MANIFEST", "EmbedOutputError", "EmbedReport", "embed"]

MANIFEST = "manifest.json"
ModelSpec = str | os.PathLike | Callable[[], torch.nn.Module]


@dataclass
class EmbedReport:
    """What one :func:`embed` call did (``failures`` covers the shards it wrote)."""

    output: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_embedded: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    quantization: QuantizationReport | None = None  # an int8 run: measured on the driver


class EmbedOutputError(UsageError):
    """The output of a Ray embedding run is not a directory."""


def _raw(text: str) -> bytes:
    """A name as its exact bytes (``surrogateescape``: undecodable bytes are kept)."""
    return os.fsencode(text) if isinstance(text, str) else bytes(text)


def _shown(raw: bytes) -> str:
    """Printable text of a name's bytes (``\\xNN`` for bytes that are not UTF-8)."""
    return bytes(raw).decode("utf-8", "backslashreplace")


def _load_model(spec: ModelSpec, pretrained: str | None) -> CLIP:
    if callable(spec):
        return cast(CLIP, spec())  # a factory of the caller's model

    return load_model(os.fspath(spec), pretrained=pretrained)


def _preprocess(batch: dict[str, np.ndarray], transform: Any, shape: tuple) -> dict:
    """CPU task: decode and preprocess; a bad image gets zero pixels and its reason."""
    pixels, errors = [], []
    for path in batch["path"]:
        try:
            pixels.append(_to_pixels(os.fsdecode(bytes(path)), transform).numpy())
            errors.append("")
        except Exception as exc:  # reported per item, never stops the run
            pixels.append(np.zeros(shape, dtype=np.float32))
            errors.append(_shown(os.fsencode(_failure_reason(exc))))  # may name the file
    return {**batch, "pixels": np.stack(pixels), "error": np.asarray(errors, dtype=object)}


class _Encoder:
    """Actor: holds the model, embeds the good rows of each batch."""

    def __init__(self, spec: ModelSpec, pretrained: str | None, device: str,
                 precision: str | None, normalize: bool, threads: int,
                 quantization: QuantizationReport | None = None) -> None:  # fmt: skip
        if device == "cpu":  # Ray pins OMP_NUM_THREADS to the actor's num_cpus otherwise
            torch.set_num_threads(threads)
        model = _load_model(spec, pretrained)
        # int8: the copy the driver measured (same weights, same quantisation), not re-measured
        self.model = model.to(device) if quantization is None else quantize_as(model, quantization)
        self.precision: Precision | None = (
            None if precision is None else check_precision(precision)
        )
        self.normalize = normalize
        self.dim = int(self.model.config.embed_dim)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = np.flatnonzero(batch["error"] == "")
        out = np.zeros((len(batch["error"]), self.dim), dtype=np.float32)

        def collect(indices: list[int], features: torch.Tensor) -> None:
            out[good[indices]] = features.cpu().numpy()

        if len(good):
            pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][good]))
            stream_image_embeddings(self.model, pixels, collect, batch_size=len(good),
                                    normalize=self.normalize, precision=self.precision)  # fmt: skip
        rest = {k: v for k, v in batch.items() if k != "pixels"}
        return {**rest, "embedding": out}


# ----------------------------------------------------------------------------- manifest
def _read_manifest(output: Path, header: dict[str, Any]) -> dict[str, Any]:
    path = output / MANIFEST
    if not path.is_file():
        return {**header, "shards": {}}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for key, value in header.items():
        if manifest.get(key) != value:
            raise ValueError(
                f"{path}: {key} is {manifest.get(key)!r}, this run's is {value!r}; "
                f"use a new output folder (or delete it to start over)"
            )
    return manifest


def _write_shard(path: Path, rows: list[dict[str, Any]], model_id: str, dim: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.stack([r["embedding"] for r in rows]) if rows else np.zeros((0, dim))
    column = pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.astype(np.float32).reshape(-1), type=pa.float32()), dim
    )
    table = pa.table({
        "id": pa.array([_shown(r["id"]) for r in rows], type=pa.string()),
        "path": pa.array([_shown(r["path"]) for r in rows], type=pa.string()),
        "path_bytes": pa.array([bytes(r["path"]) for r in rows], type=pa.binary()),
        "embedding": column,
        "model": pa.array([model_id] * len(rows), type=pa.string()),
    })  # fmt: skip
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


# ----------------------------------------------------------------------------- pipeline
@dataclass(frozen=True)
class _Probe:
    """What the driver learns from its own copy of the model before Ray starts."""

    transform: Any
    shape: tuple[int, ...]
    dim: int
    precision: Precision | None
    quantization: QuantizationReport | None


def _probe(model: ModelSpec, pretrained: str | None, precision: str | None, device: str,
           calibration: str | os.PathLike | None,
           max_degradation: float | None) -> _Probe:  # fmt: skip
    """Load the model once: its preprocessing, width and, at int8, its measured int8 copy
    (refused or warned about here, as :func:`~clipforge.quantization.apply_precision` does
    on the local path)."""
    probe = _load_model(model, pretrained)
    transform, dim = probe.image_transform, int(probe.config.embed_dim)
    sample = transform(Image.new("RGB", (64, 64)))
    if not isinstance(sample, torch.Tensor):  # NaFlex patch sequences: no fixed pixel shape
        raise UsageError(f"{model}: Ray embedding needs fixed-size pixels, not NaFlex patches")
    name = None if precision is None else resolve_precision(precision, device)
    report = None
    if name == "int8":
        if device != "cpu":
            raise UsageError("precision int8 runs on the CPU; use gpus_per_actor=0")
        measured = apply_precision(probe, name, calibration=calibration,
                                   max_degradation=max_degradation)  # fmt: skip
        report = report_of(measured)
    return _Probe(transform, tuple(sample.shape), dim, name, report)


@dataclass
class _Plan:
    items: list[tuple[str, str]]
    shard_size: int
    pending: list[int]
    model_id: str

    def shard_name(self, k: int) -> str:
        return f"shard-{k:05d}.parquet"

    def shard_rows(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, len(self.items)))


def embed(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: ModelSpec = "ViT-B-32",
    pretrained: str | None = None,
    model_id: str | None = None,
    shard_size: int = 1000,
    batch_size: int = 64,
    num_actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
    threads_per_actor: int | None = None,
    precision: str | None = None,
    calibration: str | os.PathLike | None = None,
    max_degradation: float | None = None,
    normalize: bool = True,
    address: str | None = None,
    on_shard: Callable[[str], None] | None = None,
) -> EmbedReport:
    """Embed every image of ``source`` (folder, CSV or Parquet list) into Parquet shards.

    ``model`` is a name or checkpoint path (``clipforge.load``, with ``pretrained``) or a
    zero-argument factory (then ``model_id`` is required); ``num_actors`` encoders run it,
    each with ``gpus_per_actor`` GPUs (CUDA when > 0). Connects to the Ray cluster at
    ``address`` ("auto": a running one), or starts a local Ray when none is initialised
    (and shuts it down afterwards). ``on_shard(name)`` is called after each shard is
    recorded. ``threads_per_actor`` sets a CPU encoder's torch threads (default: this
    machine's cores divided among the actors, as one process would use them; Ray alone
    would pin each 1-CPU actor to one thread). ``precision="int8"`` takes ``calibration``
    and ``max_degradation`` as :func:`clipforge.quantization.quantize` does, checked once
    here before Ray starts. See the module docstring for the output and resume semantics.
    """
    import ray

    if callable(model) and model_id is None:
        raise ValueError("model_id is required when model is a factory")
    if shard_size < 1 or batch_size < 1 or num_actors < 1:
        raise ValueError("shard_size, batch_size and num_actors must be >= 1")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise EmbedOutputError(
            f"output {os.fspath(out)} is a file; give a directory (--engine ray writes "
            "Parquet shards and a manifest into it)"
        )
    out.mkdir(parents=True, exist_ok=True)
    items = list_source(source)
    model_id = model_id or os.fspath(model)  # type: ignore[arg-type]
    header = {"model": model_id, "source": os.fspath(source), "shard_size": shard_size,
              "n_items": len(items)}  # fmt: skip
    device = "cuda" if gpus_per_actor else "cpu"
    probe = _probe(model, pretrained, precision, device, calibration, max_degradation)
    # resuming must not mix int8 and float shards (a manifest without the key: not int8)
    header["precision"] = "int8" if probe.quantization is not None else None
    manifest = _read_manifest(out, header)
    plan = _Plan(items, shard_size, [], model_id)
    report = EmbedReport(out, quantization=probe.quantization)
    if probe.quantization is not None:
        manifest["quantization"] = probe.quantization.to_dict()
    for k in range(-(-len(items) // shard_size)):
        name = plan.shard_name(k)
        done = name in manifest["shards"] and (out / name).is_file()
        (report.skipped.append(name) if done else plan.pending.append(k))
    if not plan.pending:
        return report
    threads = threads_per_actor or max(1, len(os.sched_getaffinity(0)) // num_actors)
    owns = not ray.is_initialized()
    if owns:
        ray.init(address=address)
        free_ray_garbage()
    try:
        encoder = {"fn_constructor_args": (model, pretrained, device, probe.precision,
                                           normalize, threads, probe.quantization),
                   "concurrency": num_actors, "num_gpus": gpus_per_actor or None,
                   "num_cpus": cpus_per_actor}  # fmt: skip
        _run(ray, plan, probe, batch_size, encoder, manifest, report, on_shard)
    finally:
        if owns:
            ray.shutdown()
            free_ray_garbage()
    return report


def free_ray_garbage() -> None:
    """Collect the reference cycles Ray's start-up and shut-down leave in this process.

    One holds Ray's native GCS client (an exception and the frame that raised it, in
    ``ray._private.services.start_api_server``). Left for later, it may be collected in a
    process forked from this one, such as a training DataLoader worker, where the client's
    destructor detaches a thread the child does not have and aborts it (seen in CI: "DataLoader
    worker ... is killed by signal: Aborted", ``std::thread::detach`` in the trace)."""
    gc.collect()


def _run(ray: Any, plan: _Plan, probe: _Probe, batch_size: int, encoder: dict[str, Any],
         manifest: dict[str, Any], report: EmbedReport,
         on_shard: Callable[[str], None] | None) -> None:  # fmt: skip
    """Build the dataset of the pending shards' rows and write each shard as it completes."""
    transform, shape, dim = probe.transform, probe.shape, probe.dim
    # names travel as bytes: a file name that is not UTF-8 cannot become an Arrow string
    rows = [{"id": _raw(plan.items[i][0]), "path": _raw(plan.items[i][1]), "shard": k}
            for k in plan.pending for i in plan.shard_rows(k)]  # fmt: skip
    ctx = ray.data.DataContext.get_current()
    saved, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
    try:
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // batch_size))
        ds = ds.map_batches(_preprocess, fn_kwargs={"transform": transform, "shape": shape},
                            batch_size=batch_size, num_cpus=1)  # fmt: skip
        ds = ds.map_batches(_Encoder, batch_size=batch_size, max_restarts=-1,
                            max_task_retries=-1, **encoder)  # fmt: skip
        open_shards: dict[int, list[dict[str, Any]]] = {}
        finished: set[int] = set()
        for row in ds.iter_rows():
            k = int(row["shard"])
            if k not in plan.pending or k in finished:  # a duplicate would land here
                raise RuntimeError(f"row {_shown(row['id'])!r} for shard {k}, which is not open")
            open_shards.setdefault(k, []).append(row)
            if len(open_shards[k]) == len(plan.shard_rows(k)):
                _finish_shard(plan, k, open_shards.pop(k), dim, manifest, report)
                finished.add(k)
                if on_shard is not None:
                    on_shard(plan.shard_name(k))
        if open_shards:
            raise RuntimeError(f"shards {sorted(open_shards)} did not receive all their rows")
    finally:
        ctx.execution_options.preserve_order = saved


def _finish_shard(plan: _Plan, k: int, rows: list[dict[str, Any]], dim: int,
                  manifest: dict[str, Any], report: EmbedReport) -> None:  # fmt: skip
    """Write shard ``k``'s good rows, then record it (and its failures) in the manifest."""
    name = plan.shard_name(k)
    ids = [bytes(r["id"]) for r in rows]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"{name}: an item arrived twice")
    good = [r for r in rows if not r["error"]]
    failures = [(_shown(r["path"]), str(r["error"])) for r in rows if r["error"]]
    _write_shard(report.output / name, good, plan.model_id, dim)
    manifest["shards"][name] = {"rows": len(good), "failures": failures}
    write_text_atomic(report.output / MANIFEST, json.dumps(manifest, indent=1))
    report.written.append(name)
    report.n_embedded += len(good)
    report.failures.extend(failures)
