"""Search benchmarks: vector indexes side by side, a loopback load test of ``serve``, and
indexing the Flickr photos end to end.

1. Vectors: ``--n`` (default 1,000,000) normalised 512-d vectors drawn from a mixture of
   ``--clusters`` anisotropic Gaussians (uniform random vectors have no neighbours), plus
   held-out queries. For numpy brute force, FAISS's float32 exact scan, clipforge's exact
   ``flat`` kind (float16 scan, certified float32 re-rank), clipforge's automatic choice
   (tuned to recall@10 >= 0.95 on separate tuning queries) and the index autofaiss's rules
   pick (HNSW32 when it fits in memory, efSearch tuned the same way): build time, index
   bytes (serialised; ``flat`` also holds a float16 copy in memory), p50/p99 single-query
   latency, queries/s at batch 64, recall@10 vs exact. First the single-core memory read
   bandwidth and the floor it puts under an exact scan. With ``--weights``, the same rows
   on the CIFAR-10 test-set embeddings of that trained model.
2. Serve (``--serve-n`` vectors, default 100,000): ``clipforge serve``'s app under uvicorn on
   127.0.0.1 with a ViT-B-32 text tower (random weights: they do not change its speed), in its own process (restarted, so with an empty
   query cache, for each run); this process is the client. Four runs of ``--requests``
   queries each: closed loop (``--clients`` concurrent clients: throughput under saturation)
   and open loop (Poisson arrivals at ``--rate`` per second: latency at that load), each with
   all-distinct Flickr-caption queries and with a Zipf-repeating stream (``--zipf-s``):
   errors, p50/p90/p99 latency, queries/s, batches and cache hits (``serve_load.py``).
3. Flickr (``../shared/data/flickr8k-1k.tar.gz``): images/s of ``clipforge.embed_images`` vs
   ``Index.sync`` on the same 1,000 files (indexing overhead), then ``Index.sync`` at int8 vs
   fp32 (``flickr_int8.py``, unless ``--skip-flickr-int8``) with the ``--flickr-weights``
   model (default ``--weights``, else a random ViT-B-32); with a trained model,
   caption→own-image recall@10 over the index, reported separately for the photos the
   model was trained on and the held-out ones (``--flickr-train``, default the run's own
   ``csv`` training table).

``--weights`` / ``--flickr-weights`` are anything ``clipforge.load`` reads: a training run directory (its newest
intact checkpoint), ``RUN/latest``, ``RUN/step_N``, or a checkpoint file or directory; the
architecture comes from the checkpoint and what it was trained on from the run's
``train_config.json``.

4. Text in images (``search_ocr.py``): OCR + CLIP fusion vs CLIP alone, recall@10 of
   pseudo-word queries on generated screenshots; ``Index.sync`` images/s with and without
   ``--ocr``.

Usage: python benchmarks/search.py [--n 100000] [--skip-vectors | --skip-synthetic]
       [--skip-serve] [--skip-flickr] [--skip-ocr] [--weights RUN_OR_CKPT]
       [--flickr-weights RUN_OR_CKPT] [--flickr-train TSV] [--skip-video]
       [--video-weights CKPT] [--video-steps 500] [--video-count 30] [--video-speed-s 60]

5. Video (``search_video.py``): text→moment recall@10 over generated videos of procedural
   scenes with a model trained on procedural data (and with random weights: chance), and
   indexing speed in seconds per hour of video (a 720p30 H.264 clip, tiny model and
   ViT-B-32).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch

import clipforge
from clipforge.index import Index, StoreOptions
from clipforge.index.faiss_store import FaissStore
from clipforge.index.metadata import ImageRow
from flickr_int8 import bench_flickr_int8
from results import write_result
from search_ocr import add_arguments as add_ocr_arguments, bench_ocr
from search_video import bench_video

SHARED = Path(__file__).resolve().parents[2] / "shared"
CLIP_RETRIEVAL_QPS = 20  # clip-retrieval back end, as published (~50 ms, ~20 queries/s)


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors from a mixture of axis-scaled (anisotropic) Gaussians.

    Like CLIP embeddings, the clusters are not orthogonal: every centre shares a common
    direction and one of ``sqrt(clusters)`` super-cluster directions (random pairs have
    cosine ~0.4, members of one cluster ~0.7).
    """
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    common = unit(rng.standard_normal(dim, dtype=np.float32))
    supers = unit(rng.standard_normal((int(clusters**0.5) + 1, dim), dtype=np.float32))
    own = unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    centers = common + 0.7 * supers[rng.integers(0, len(supers), clusters)] + 0.5 * own
    scales = rng.lognormal(0.0, 0.75, (clusters, dim)).astype(np.float32) * (0.6 / dim**0.5)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        which = rng.integers(0, clusters, stop - start)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = unit(centers[which] + noise * scales[which])
    return out


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    return flat.search(queries, k)[1]


def recall(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    hits = sum(len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (len(truth) * k)


def measure(search: Callable[[np.ndarray, int], np.ndarray], queries, truth, singles: int):
    """p50/p99 single-query ms (one thread), batch-64 queries/s (all threads), recall@10."""
    latencies = []
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one query: OpenMP fan-out only costs (worse on busy cores)
    for q in queries[:singles]:
        start = time.perf_counter()
        search(q[None], 10)
        latencies.append((time.perf_counter() - start) * 1000)
    faiss.omp_set_num_threads(threads)
    start = time.perf_counter()
    found = [search(queries[i : i + 64], 10) for i in range(0, len(queries), 64)]
    qps = len(queries) / (time.perf_counter() - start)
    lat = np.percentile(latencies, [50, 99])
    return lat[0], lat[1], qps, recall(np.concatenate(found), truth)


def numpy_search(base: np.ndarray) -> Callable:
    def search(q: np.ndarray, k: int) -> np.ndarray:
        scores = q @ base.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        return np.take_along_axis(top, order, axis=1)

    return search


def store_row(name, base, queries, truth, tune_q, tune_truth, kind, memory=None):
    """Build a FaissStore of ``kind``, tune it on separate queries, measure it."""
    start = time.perf_counter()
    store = FaissStore(Path(tempfile.mkdtemp()), base.shape[1], StoreOptions(kind, memory))
    store.rebuild(np.arange(len(base), dtype=np.int64), base)
    built = time.perf_counter() - start
    tuned = store.tune(tune_q, tune_truth, 10)
    nbytes = faiss.serialize_index(store.index).nbytes
    stats = measure(lambda q, k: store.search(q, k)[1], queries, truth, 300)
    desc = ", ".join(f"{k}={v}" for k, v in store.describe().items() if k != "backend")
    return (f"{name} [{desc}]", built, nbytes, *stats, tuned)


ROWS: list[dict] = []
"""Every measured row, written to benchmarks/results/search.json at the end of the run."""


def bench_vectors(args) -> None:
    n, dim = args.n, 512
    clusters = args.clusters or max(10, n // 100)
    print(f"\n== vectors: {n:,} x {dim} from {clusters:,} anisotropic Gaussians ==")
    start = time.perf_counter()
    data = clustered(n + 2 * args.queries, dim, clusters, seed=0)
    base, queries, tune_q = data[:n], data[n : n + args.queries], data[n + args.queries :]
    truth, tune_truth = exact_top(base, queries, 10), exact_top(base, tune_q, 10)
    print(f"data + exact ground truth: {time.perf_counter() - start:.1f} s")
    data_label = f"{n:,} x {dim} synthetic"
    print_floor(base)
    print_rows(contender_rows(args.kinds, base, queries, truth, tune_q, tune_truth), data_label)


def print_floor(base: np.ndarray) -> None:
    """Single-core memory read bandwidth, and the time an exact scan of ``base`` needs at it."""
    block = np.ones(100_000_000, np.float32)  # 400 MB, far above the caches
    best = min(_seconds(block.sum) for _ in range(5))
    bandwidth = block.nbytes / best
    print(f"memory read bandwidth (numpy sum of 400 MB, one core): {bandwidth / 1e9:.1f} GB/s; "
          f"exact-scan floor for {len(base):,} x {base.shape[1]}: float32 "
          f"{1000 * base.nbytes / bandwidth:.1f} ms, float16 {500 * base.nbytes / bandwidth:.1f} ms"
          " per single query")  # fmt: skip


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def contender_rows(kinds: str, base, queries, truth, tune_q, tune_truth) -> list[tuple]:
    """Build and measure each requested contender on the same data."""
    contenders = {
        "flat": ("clipforge exact (fp16 scan + fp32 rerank)", "flat"),
        "faissflat": ("faiss IndexFlatIP (fp32 scan)", None),
        "auto": ("clipforge auto", "auto"),
        "ivf": ("clipforge IVF-Flat", "ivf"),
        "hnsw": ("autofaiss pick HNSW32", "hnsw"),
    }
    rows = []
    for key in kinds.split(","):
        if key == "numpy":
            stats = measure(numpy_search(base), queries[:128], truth[:128], 30)
            rows.append(("numpy brute force", 0.0, base.nbytes, *stats, {}))
        elif key == "faissflat":
            flat = faiss.IndexFlatIP(base.shape[1])
            flat.add(base)
            stats = measure(lambda q, k, flat=flat: flat.search(q, k)[1], queries, truth, 300)
            rows.append((contenders[key][0], 0.0, base.nbytes, *stats, {}))
        else:
            name, kind = contenders[key]
            rows.append(store_row(name, base, queries, truth, tune_q, tune_truth, kind))
    return rows


def print_rows(rows: list[tuple], data: str) -> None:
    print(
        f"{'index':48} {'build s':>8} {'MiB':>7} {'p50 ms':>7} {'p99 ms':>7} {'q/s@64':>8} {'R@10':>6}"
    )
    for name, built, nbytes, p50, p99, qps, rec, _ in rows:
        print(
            f"{name:48} {built:8.1f} {nbytes / 2**20:7.0f} {p50:7.3f} {p99:7.3f} {qps:8.0f} {rec:6.3f}"
        )
        ROWS.append({"task": f"search {data}", "index": name, "build s": built,
                     "MiB": nbytes / 2**20, "p50 ms": p50, "p99 ms": p99, "q/s @64": qps,
                     "R@10": rec})  # fmt: skip


def cifar_vectors(weights: str) -> np.ndarray:
    """Embeddings of the 10,000 CIFAR-10 test images by the trained model ``weights``."""
    archive = SHARED / "data" / "cifar10-test.tar.gz"
    if not archive.exists():
        raise SystemExit(f"missing {archive}")
    work = Path(tempfile.mkdtemp())
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    paths = sorted(str(p) for p in (work / "cifar10" / "test").rglob("*.jpg"))
    return clipforge.embed_images(load_model(weights), paths, num_workers=2).embeddings


def bench_real(args) -> None:
    """The same contenders on real CIFAR-10 embeddings (queries: 1,000 held-out images)."""
    data = cifar_vectors(args.weights)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data))
    queries, tune_q, base = data[order[:1000]], data[order[1000:1500]], data[order[1500:]]
    truth, tune_truth = exact_top(base, queries, 10), exact_top(base, tune_q, 10)
    print(f"\n== CIFAR-10 test embeddings: {len(base):,} x {base.shape[1]} ==")
    data_label = f"{len(base):,} x {base.shape[1]} CIFAR-10"
    print_rows(contender_rows(args.kinds, base, queries, truth, tune_q, tune_truth), data_label)


def _fake_index(n: int, model, folder: Path, precision: str | None = None) -> Index:
    """An index of ``n`` clustered vectors with placeholder paths (no image files), recorded
    as built at ``precision`` (so the server queries it at that precision)."""
    index = Index.open(folder, model, precision=precision)
    vectors = clustered(n, model.config.embed_dim, max(10, n // 100), seed=1)
    with index.meta.transaction():
        for i, vector in enumerate(vectors):
            index.meta.insert_image(ImageRow(0, f"/fake/{i}.jpg", 1, i, f"{i:064x}", 1, 1), vector)
        index.meta.bump_version()
    index.rebuild()
    return index


def _serve_child(folder: str, weights: str | None, port: int, config: dict) -> None:
    """The server process: open the fake index with the same model at the same precision
    (int8: ``create_app`` makes the int8 copy before the health check answers), serve it."""
    from clipforge.serve import ServeConfig, create_app
    from clipforge.serve.runner import run

    index = Index.open(folder, serve_model(), precision=config["precision"])
    app = create_app(index, ServeConfig(**config))
    run(app, port=port, log_level="warning")  # as `clipforge serve` runs it


def serve_model():
    """The served text tower: ViT-B-32 with seed-0 random weights (the speed is the same as
    trained weights'); both processes build the same one, so the index accepts it."""
    torch.manual_seed(0)
    return clipforge.create_model("ViT-B-32").eval()


def bench_serve(args) -> None:
    """Closed- and open-loop runs, distinct and Zipf queries (server in another process)."""
    import serve_load

    folder = Path(tempfile.mkdtemp())
    _fake_index(args.serve_n, serve_model(), folder, args.serve_precision).close()
    captions = flickr_captions()
    n = args.requests
    streams = {
        "distinct": serve_load.distinct_queries(captions, n),
        "zipf": serve_load.zipf_queries(captions, n, args.zipf_s),
    }
    threads = args.serve_threads or max(1, (os.cpu_count() or 1) - 1)  # as `clipforge serve`
    config = {"threads": threads, "precision": args.serve_precision}
    print(f"\n== serve: {args.serve_n:,} vectors, ViT-B-32 text tower "
          f"({args.serve_precision or 'fp32'}), {threads} torch thread(s), "
          f"{n} queries per run; zipf s={args.zipf_s}: {len(set(streams['zipf']))} distinct "
          f"({100 * len(set(streams['zipf'])) / n:.0f} %) ==")  # fmt: skip
    for mode in ("closed", "open"):
        for stream, queries in streams.items():
            _serve_run(args, folder, config, mode, stream, queries)


def _serve_run(args, folder: Path, config: dict, mode: str, stream: str, queries) -> None:
    """One load run against a fresh server process (so with an empty query cache)."""
    import multiprocessing

    import httpx

    import serve_load

    url = f"http://127.0.0.1:{args.port}"
    child = multiprocessing.get_context("spawn").Process(
        target=_serve_child, args=(str(folder), args.weights, args.port, config), daemon=True
    )
    child.start()
    try:
        _wait_healthy(url, child)
        server_cpu, client_cpu = _cpu_seconds(child.pid), sum(os.times()[:2])
        if mode == "closed":
            load = serve_load.closed_loop(f"{url}/search", queries, args.clients)
            label = f"closed loop, {args.clients} clients"
        else:
            load = serve_load.open_loop(f"{url}/search", queries, args.rate)
            label = f"open loop, {args.rate:g}/s Poisson"
        result = asyncio.run(load)
        server_cpu = _cpu_seconds(child.pid) - server_cpu
        client_cpu = sum(os.times()[:2]) - client_cpu
        stats = httpx.get(f"{url}/health").json()["batching"]
    finally:
        child.terminate()
        child.join()
    qps = len(result.latencies) / result.elapsed
    done = max(len(result.latencies), 1)
    print(f"{label:30} {stream:8}: {result.summary()} ({qps / CLIP_RETRIEVAL_QPS:.1f}x "
          f"clip-retrieval's ~{CLIP_RETRIEVAL_QPS}/s)\n{'':41}CPU per query: server "
          f"{1000 * server_cpu / done:.1f} ms, load client {1000 * client_cpu / done:.1f} ms; "
          f"batching {stats}")  # fmt: skip
    ROWS.append({"task": f"serve {args.serve_n:,} vectors, {label}", "stream": stream,
                 "precision": config["precision"] or "fp32", "q/s": qps,
                 "load": result.summary()})  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; else NaN)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_healthy(url: str, child) -> None:
    import httpx

    while child.is_alive():
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server process died")


def load_model(weights: str | None):
    """The trained model ``weights`` (any path ``clipforge.load`` reads), else a random ViT-B-32."""
    if weights:
        model = clipforge.load(weights)
    else:
        torch.manual_seed(0)
        model = clipforge.create_model("ViT-B-32").eval()
    print(f"model: {describe_model(model, weights)}")
    return model


def run_config(weights: str) -> dict | None:
    """``train_config.json`` of the training run ``weights`` is (or is a checkpoint of)."""
    path = Path(weights)
    for folder in (path, path.parent):
        if (folder / "train_config.json").is_file():
            return json.loads((folder / "train_config.json").read_text(encoding="utf-8"))
    return None


def describe_model(model, weights: str | None) -> str:
    """Architecture (from the loaded config) and, for a training run, what it was trained on."""
    cfg = model.config.to_dict()
    vision, text = cfg["vision"], cfg["text"]
    keys = ("image_size", "patch_size", "width", "layers")
    arch = (f"{vision['type']} ({', '.join(f'{k} {vision[k]}' for k in keys if k in vision)}), "
            f"text width {text.get('width')} x {text.get('layers')} layers, embed_dim "
            f"{cfg['embed_dim']}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params")  # fmt: skip
    if not weights:
        return f"ViT-B-32 [{arch}], random weights (no --weights)"
    run = run_config(weights)
    if run is None:
        return f"{weights} [{arch}]; training data unknown (no train_config.json beside it)"
    data = run["data"]
    return (f"{weights} [{arch}]; trained by clipforge train: step {checkpoint_step(weights)} of "
            f"{run['steps']} x batch {run['batch_size']} on {data['kind']} {data['path']} "
            f"{data.get('options') or ''}")  # fmt: skip


def checkpoint_step(weights: str) -> int | None:
    """The training step of the checkpoint ``weights`` names (a run: its newest intact one)."""
    from clipforge.train.checkpoint import load_checkpoint, load_latest

    path = Path(weights)
    if path.name == "latest" or (path / "train_config.json").is_file():
        ckpt = load_latest(path.parent if path.name == "latest" else path)
    else:
        ckpt = load_checkpoint(path) if (path / "state.pt").is_file() else None
    return ckpt.step if ckpt is not None else None


def training_photos(args) -> set[str] | None:
    """File names of the photos the model was trained on (``--flickr-train`` or its run's table)."""
    table, column = args.flickr_train, "filepath"
    run = run_config(args.flickr_weights) if args.flickr_weights else None
    if table is None and run is not None and run["data"]["kind"] == "csv":
        table = run["data"]["path"]
        column = run["data"].get("options", {}).get("image_column", column)
    if table is None or not Path(table).is_file():
        return None
    with open(table, encoding="utf-8", newline="") as f:
        delimiter = "\t" if Path(table).suffix in (".tsv", ".tab") else ","
        return {Path(row[column]).name for row in csv.DictReader(f, delimiter=delimiter)}


def caption_recall(index: Index, captions: Path, seen: set[str] | None) -> None:
    """Recall@10 of each caption's own photo among all indexed photos (seen / held out)."""
    with open(captions, encoding="utf-8") as f:
        pairs = [row for row in csv.reader(f, delimiter="\t") if len(row) == 2][1:]  # header
    hits = {Path(p).name: any(Path(h.path).name == Path(p).name for h in index.search(c, k=10)) for p, c in pairs}  # fmt: skip
    chance = 10 / len(hits)
    groups = {"all": list(hits.values())}
    if seen is not None:
        groups["trained on"] = [hit for name, hit in hits.items() if name in seen]
        groups["held out"] = [hit for name, hit in hits.items() if name not in seen]
    for group, values in groups.items():
        if values:
            print(f"caption -> own image recall@10 ({group}): {statistics.mean(values):.3f} over "
                  f"{len(values)} captions, searching all {len(hits)} photos (chance {chance:.3f})")  # fmt: skip


def flickr_captions() -> list[str]:
    """The 1,000 Flickr captions (one per photo)."""
    with tarfile.open(flickr_archive()) as tar:
        text = tar.extractfile("flickr8k-1k/captions.tsv").read().decode("utf-8")
    rows = [row for row in csv.reader(text.splitlines(), delimiter="\t") if len(row) == 2]
    return [caption for _, caption in rows[1:]]


def flickr_archive() -> Path:
    archive = SHARED / "data" / "flickr8k-1k.tar.gz"
    if not archive.exists():
        raise SystemExit(f"missing {archive}")
    return archive


def bench_flickr(args) -> None:
    archive = flickr_archive()
    work = Path(tempfile.mkdtemp())
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    folder = work / "flickr8k-1k" / "images"
    paths = sorted(str(p) for p in folder.iterdir())
    if args.flickr_limit:
        for extra in paths[args.flickr_limit :]:
            Path(extra).unlink()
        paths = paths[: args.flickr_limit]
    print(f"\n== flickr: {len(paths)} photos, batch 64, {args.workers} workers ==")
    model = load_model(args.flickr_weights)
    clipforge.embed_images(model, paths[:64], batch_size=64)  # warm-up
    embed_s = index_s = float("inf")
    for round_ in range(args.rounds):  # alternate, keep the best: shared cores are noisy
        start = time.perf_counter()
        clipforge.embed_images(model, paths, batch_size=64, num_workers=args.workers)
        embed_s = min(embed_s, time.perf_counter() - start)
        index = Index.open(work / f"db{round_}", model)
        start = time.perf_counter()
        report = index.sync([folder], batch_size=64, num_workers=args.workers, progress=False)
        index_s = min(index_s, time.perf_counter() - start)
    print(f"embed_images {len(paths) / embed_s:.1f} images/s; Index.sync {report.added / index_s:.1f} images/s "
          f"(added {report.added}, failed {len(report.failed)}); overhead {100 * (index_s / embed_s - 1):+.1f} % "
          f"(best of {args.rounds})")  # fmt: skip
    ROWS.append({"task": f"flickr {len(paths)} photos", "index": "embed_images / Index.sync",
                 "q/s": len(paths) / embed_s, "load": f"Index.sync {report.added / index_s:.1f} "
                 f"images/s, overhead {100 * (index_s / embed_s - 1):+.1f} %"})  # fmt: skip
    if not args.skip_flickr_int8:  # benchmarks/flickr_int8.py
        ROWS.extend(bench_flickr_int8(model, folder, work, args.rounds, args.workers,
                                      describe_model(model, args.flickr_weights)))  # fmt: skip
    if not args.flickr_weights:
        print("caption recall@10: not measured (needs --weights: a trained model)")
        return
    caption_recall(index, work / "flickr8k-1k" / "captions.tsv", training_photos(args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=0, help="default n / 100")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--kinds", default="numpy,faissflat,flat,auto,ivf,hnsw", help="rows")
    parser.add_argument("--serve-n", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000, help="queries per serve run")
    parser.add_argument("--rate", type=float, default=100, help="open-loop queries/s")
    parser.add_argument("--zipf-s", type=float, default=1.0, help="query popularity exponent")
    parser.add_argument("--serve-threads", type=int, default=0, help="0: as serve")
    parser.add_argument("--serve-precision", default=None, help="text tower: bf16 | int8 (default fp32)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="Flickr timing rounds")
    parser.add_argument("--flickr-limit", type=int, default=0, help="index only N photos")
    parser.add_argument("--weights", default=None, help="trained model: run dir or checkpoint")
    parser.add_argument("--flickr-weights", default=None, help="Flickr's model (default --weights)")
    parser.add_argument("--flickr-train", default=None, help="table the model was trained on")
    parser.add_argument("--skip-vectors", action="store_true", help="no vector rows at all")
    parser.add_argument("--skip-synthetic", action="store_true", help="only the CIFAR-10 rows")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-flickr", action="store_true")
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--skip-flickr-int8", action="store_true", help="no int8 vs fp32 pair")
    parser.add_argument("--video-weights", default=None, help="procedural model (else trained)")
    parser.add_argument("--video-steps", type=int, default=500, help="training without weights")
    parser.add_argument("--video-count", type=int, default=30, help="generated videos")
    parser.add_argument("--video-speed-s", type=float, default=60, help="720p clip seconds")
    parser.add_argument("--skip-ocr", action="store_true", help="no text-in-images rows")
    add_ocr_arguments(parser)
    args = parser.parse_args()
    args.flickr_weights = args.flickr_weights or args.weights
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    if not (args.skip_vectors or args.skip_synthetic):
        bench_vectors(args)
    if args.weights and not args.skip_vectors:
        bench_real(args)
    if not args.skip_serve:
        bench_serve(args)
    if not args.skip_flickr:
        bench_flickr(args)
    if not args.skip_video:  # benchmarks/search_video.py
        video_rows = bench_video(args)
        ROWS.extend(video_rows)
        write_result("search_video", {"rows": video_rows})  # also alone, like search_ocr
    if not args.skip_ocr:  # benchmarks/search_ocr.py
        model = load_model(args.weights)
        ocr_rows = bench_ocr(args, model, describe_model(model, args.weights))
        ROWS.extend(ocr_rows)
        write_result("search_ocr", {"rows": ocr_rows})  # also alone: other sections may not run
    write_result("search", {"rows": ROWS})


if __name__ == "__main__":
    main()
