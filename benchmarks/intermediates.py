"""Cost of reading features inside the image tower, on random weights (CPU, fp32).

Rows per architecture, each the median of ``--reps`` interleaved repetitions on one batch:

* ``encode_image``: the pooled embedding alone (the baseline; its last block computes only
  the class token's row);
* ``last layer``: ``forward_intermediates(image_indices=1)`` -- the last block's patch
  tokens *and* the pooled embedding from the same pass (target: ≤ 3 % over the baseline);
* ``penultimate + stop_early``: ``forward_intermediates(image_indices=[-2], stop_early=True,
  intermediates_only=True)`` (LLaVA's features) -- the last block is not run;
* ``penultimate, full pass``: the same tokens without ``stop_early`` (what it saves).

Prints seconds per batch and the ratios to ``encode_image``.

Usage: python benchmarks/intermediates.py [--models ViT-B-32 ViT-L-14] [--batch 8]
       [--reps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import clipforge
from results import write_result


def _rows(model: clipforge.CLIP, images: torch.Tensor) -> dict[str, Callable[[], object]]:
    fi = model.forward_intermediates
    return {
        "encode_image": lambda: model.encode_image(images),
        "last layer": lambda: fi(image=images, image_indices=1, normalize=False),
        "penultimate + stop_early": lambda: fi(
            image=images, image_indices=[-2], stop_early=True, intermediates_only=True
        ),
        "penultimate, full pass": lambda: fi(
            image=images, image_indices=[-2], intermediates_only=True
        ),
    }


def measure(name: str, batch: int, reps: int) -> dict[str, float]:
    """Median seconds per batch of each row, repetitions interleaved across rows."""
    torch.manual_seed(0)
    model = clipforge.create_model(name, towers="image").eval()
    size = model.config.vision.image_size
    images = torch.randn(batch, 3, size, size)
    rows = _rows(model, images)
    times: dict[str, list[float]] = {row: [] for row in rows}
    with torch.inference_mode():
        for fn in rows.values():  # warm-up
            fn()
        for _ in range(reps):
            for row, fn in rows.items():
                start = time.perf_counter()
                fn()
                times[row].append(time.perf_counter() - start)
    return {row: statistics.median(t) for row, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-L-14"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    rows = []
    for name in args.models:
        result = measure(name, args.batch, args.reps)
        base = result["encode_image"]
        layers = len(clipforge.create_model(name, towers="image").visual.blocks)
        print(f"\n{name} ({layers} blocks; median of {args.reps} interleaved reps)")
        for row, seconds in result.items():
            print(f"  {row:<26} {seconds * 1000:8.1f} ms   x{seconds / base:.3f}")
            rows.append({"model": name, "call": row, "ms_per_batch": round(seconds * 1000, 1),
                         "vs_encode_image": round(seconds / base, 3)})  # fmt: skip
        saved = result["penultimate, full pass"] - result["penultimate + stop_early"]
        print(f"  stop_early saves {saved * 1000:.1f} ms "
              f"({saved / result['penultimate, full pass']:.1%}; one block = "
              f"{1 / layers:.1%} of the blocks)")  # fmt: skip
    write_result("intermediates", {"batch": args.batch, "reps": args.reps, "rows": rows})


if __name__ == "__main__":
    main()
