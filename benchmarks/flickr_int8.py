"""Indexing the Flickr photos at int8 vs fp32, side by side in one run (``search.py``'s
Flickr section calls it): ``Index.sync`` images/s of the same model at each precision,
alternating rounds and keeping each one's best (shared cores are noisy). The int8 copy is
made once before timing, as ``clipforge index --precision int8`` does before any work.
Writes ``results/flickr_int8.json`` (rendered in docs/guide/deployment.md)."""

from __future__ import annotations

import time
from pathlib import Path

from clipforge.index import Index
from clipforge.quantization import prepare_int8, report_of
from results import write_result

PRECISIONS = ("fp32", "int8")
TARGET = 1.8  # issue 20: int8 indexes the 1,000 Flickr photos >= 1.8x faster than fp32


def _accuracy(report, precision: str) -> dict:
    """The accuracy cost next to the speed-up: the int8 copy's image cosine vs fp32 (mean and
    worst over its calibration images), measured when the copy was made in this run."""
    if precision == "fp32" or report is None:
        return {"image cosine vs fp32": 1.0, "worst": 1.0}
    return {"image cosine vs fp32": report.image_cosine, "worst": report.image_cosine_min}


def bench_flickr_int8(model, folder: Path, work: Path, rounds: int, workers: int,
                      described: str) -> list[dict]:  # fmt: skip
    """Time ``Index.sync`` of ``folder`` at fp32 and int8; print, write and return the rows."""
    report = report_of(prepare_int8(model))
    best = {p: float("inf") for p in PRECISIONS}
    added = {}
    for round_ in range(rounds):
        for precision in PRECISIONS:
            index = Index.open(work / f"db-{precision}-{round_}", model, precision=precision)
            start = time.perf_counter()
            result = index.sync([folder], batch_size=64, num_workers=workers, progress=False)
            best[precision] = min(best[precision], time.perf_counter() - start)
            added[precision] = result.added
            index.close()
    rows = [
        {"task": f"Index.sync {added[p]} Flickr photos", "precision": p,
         "images/s": added[p] / best[p], "speed-up vs fp32": best["fp32"] / best[p],
         **_accuracy(report, p), "target": f">= {TARGET}x" if p == "int8" else ""}
        for p in PRECISIONS
    ]  # fmt: skip
    for row in rows:
        print(f"{row['task']} at {row['precision']}: {row['images/s']:.1f} images/s "
              f"({row['speed-up vs fp32']:.2f}x fp32; best of {rounds}; image cosine vs fp32 "
              f"{row['image cosine vs fp32']:.4f}, worst {row['worst']:.4f})")  # fmt: skip
    write_result("flickr_int8", {"rows": rows, "model": described,
                                 "quantization": report.to_dict() if report else None})  # fmt: skip
    return rows
