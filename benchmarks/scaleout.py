"""Scale-out overhead: the Ray Data embedding pipeline vs single-process ``embed_images``.

Both embed the same photos (the 1,000 Flickr8k images of ../shared/data by default) with
the same random-weight model, the same batch size and the same number of CPU decode
workers; the script prints each wall time, images/s, the Ray pipeline's overhead on one
machine (issue 13 asks for <= 15 %) and the largest difference between the two outputs.
Ray's start-up is timed apart from the pipeline; both timings include building the model (each
Ray actor builds its own). On a GPU machine pass ``--gpus 1`` to
give each encoder actor a GPU (and run the reference on CUDA).

``--index`` instead measures the search backends: bulk load (``rebuild``) and query
throughput (batches of 100 queries, top-10) of Milvus (milvus-lite, exact FLAT) and the
embedded FAISS index (``auto``: IVF-Flat at this size, tuned) on ``--vectors`` clustered
unit vectors (100,000 by default), with recall@10 against exact search.

Usage: python benchmarks/scaleout.py [--limit N] [--model ViT-B-32] [--batch-size 64]
       [--workers 2] [--actors 1] [--gpus 0] [--shard-size 250]
       python benchmarks/scaleout.py --index [--vectors 100000] [--dim 512]
Heavy: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

import clipforge
from clipforge.data.folder import list_images
from results import write_result

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLICKR = SHARED / "data" / "flickr8k-1k.tar.gz"


def extract_photos(tar_path: Path, dest: Path, limit: int | None) -> Path:
    """The archive's images under ``dest/images`` (the first ``limit`` in name order)."""
    with tarfile.open(tar_path) as tar:
        members = sorted(
            (m for m in tar if m.isfile() and m.name.startswith("flickr8k-1k/images/")),
            key=lambda m: m.name,
        )[:limit]
        tar.extractall(dest, members=members, filter="data")
    return dest / "flickr8k-1k" / "images"


def random_model(name: str):
    """A zero-argument factory: the same random weights in every process."""

    def factory():
        torch.manual_seed(0)
        return clipforge.create_model(name).eval()

    return factory


def single_process(folder: Path, args: argparse.Namespace) -> tuple[float, dict]:
    paths = list_images(folder)
    start = time.perf_counter()  # the model is built inside the timing, as each Ray actor does
    model = random_model(args.model)().to("cuda" if args.gpus else "cpu")
    result = clipforge.embed_images(model, paths, batch_size=args.batch_size,
                                    num_workers=args.workers)  # fmt: skip
    seconds = time.perf_counter() - start
    return seconds, dict(zip(result.paths, result.embeddings, strict=True))


def ray_pipeline(folder: Path, out: Path, args: argparse.Namespace) -> tuple[float, float, dict]:
    import ray

    from clipforge.distributed import embed

    start = time.perf_counter()
    ray.init(num_cpus=args.workers + args.actors, num_gpus=args.gpus or None,
             include_dashboard=False)  # fmt: skip
    startup = time.perf_counter() - start
    try:
        start = time.perf_counter()
        embed(folder, out, model=random_model(args.model), model_id=f"{args.model}-random",
              batch_size=args.batch_size, num_actors=args.actors, shard_size=args.shard_size,
              gpus_per_actor=float(bool(args.gpus)))  # fmt: skip
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    found = {}
    for shard in sorted(out.glob("shard-*.parquet")):
        table = pq.read_table(shard).to_pydict()
        found.update(zip(table["path"], map(np.asarray, table["embedding"]), strict=True))
    return startup, seconds, found


def clustered_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 100 random centres (CLIP-like: neighbours are close)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 100, n)] + 0.5 * rng.standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def index_backends(n: int, dim: int) -> None:
    from clipforge.index.store import StoreOptions, open_backend

    vectors, ids = clustered_vectors(n, dim), np.arange(1, n + 1, dtype=np.int64)
    queries = clustered_vectors(1000, dim, seed=1)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] + 1
    rows = []
    for name in ("faiss", "milvus"):
        with tempfile.TemporaryDirectory() as tmp:
            store = open_backend(name, Path(tmp), dim, StoreOptions())
            start = time.perf_counter()
            store.rebuild(ids, vectors)
            store.save(0)
            load_s = time.perf_counter() - start
            tuned = store.tune(queries[:100], exact[:100], 10)
            start = time.perf_counter()
            found = np.concatenate([store.search(queries[i : i + 100], 10)[1]
                                    for i in range(0, len(queries), 100)])  # fmt: skip
            query_s = time.perf_counter() - start
        recall = np.mean(
            [len(np.intersect1d(f, e)) / 10 for f, e in zip(found, exact, strict=True)]
        )
        print(f"{name:7s}: bulk load {n} x {dim} in {load_s:7.2f} s ({n / load_s:9.0f} vec/s); "
              f"{len(queries) / query_s:8.0f} queries/s; recall@10 {recall:.3f}; "
              f"{store.describe()} {tuned}")  # fmt: skip
        rows.append({"backend": name, "vectors": f"{n} x {dim}", "bulk load vec/s": n / load_s,
                     "queries/s": len(queries) / query_s, "recall@10": recall,
                     "index": f"{store.describe()} {tuned}"})  # fmt: skip
    write_result("scaleout_index", {"rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="CPU decode workers (both)")
    parser.add_argument("--actors", type=int, default=1, help="Ray encoder actors")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per Ray actor (0 or 1)")
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--index", action="store_true", help="Milvus vs FAISS instead")
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    if args.index:
        index_backends(args.vectors, args.dim)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = extract_photos(FLICKR, Path(tmp), args.limit)
        n = len(list_images(folder))
        local_s, reference = single_process(folder, args)
        startup_s, ray_s, found = ray_pipeline(folder, Path(tmp) / "out", args)
    assert sorted(found) == sorted(reference), "the two runs embedded different images"
    worst = max(float(np.abs(found[p] - reference[p]).max()) for p in reference)
    print(f"{n} images, {args.model} (random weights), batch {args.batch_size}, "
          f"{args.workers} decode workers, {args.actors} actor(s), {args.gpus} GPU(s)")  # fmt: skip
    print(f"single process : {local_s:8.2f} s  {n / local_s:8.1f} img/s")
    print(f"ray pipeline   : {ray_s:8.2f} s  {n / ray_s:8.1f} img/s  (+ {startup_s:.1f} s start)")
    print(f"ray overhead   : {100 * (ray_s / local_s - 1):+.1f} %   max |delta| {worst:.2e}")
    task = f"embed {n} photos, {args.model}, batch {args.batch_size}"
    rows = [
        {"task": task, "pipeline": "single process", "img/s": n / local_s, "seconds": local_s},
        {"task": task, "pipeline": f"Ray Data, {args.actors} actor(s), {args.gpus} GPU(s)",
         "img/s": n / ray_s, "seconds": ray_s, "start-up s": startup_s,
         "overhead %": 100 * (ray_s / local_s - 1), "max abs diff": worst},
    ]  # fmt: skip
    write_result("scaleout", {"rows": rows})


if __name__ == "__main__":
    main()
