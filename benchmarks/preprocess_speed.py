"""Preprocessing speed: clipforge's openai pipeline vs open_clip's ``image_transform``.

Images: the 8 photos in ../shared/data/photos and 200 JPEGs from
../shared/data/flickr8k-1k.tar.gz (extracted to a temporary directory outside the repo).
Each transform runs on every image ``--repeats`` times, interleaved with the other
transforms; the per-image minimum is kept and the mean over images reported, with
decoding from disk excluded (pre-decoded PIL images) and included
(``transform(Image.open(path))`` vs ``transform(path)``).

    python benchmarks/preprocess_speed.py [--size 224] [--repeats 7] [--threads 1] [--clock cpu]

``--threads`` sets torch's intra-op threads (1 = what DataLoader workers use).
``--clock cpu`` (default) times with ``time.process_time`` (CPU time of this process, so
other processes on a shared machine do not inflate it); ``--clock wall`` uses
``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from PIL import Image

from clipforge.preprocess import PreprocessConfig, build_preprocess, load_image
from results import write_result

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHOTOS = SHARED / "data" / "photos"
FLICKR = SHARED / "data" / "flickr8k-1k.tar.gz"


def extract_flickr(dest: Path, n: int) -> list[Path]:
    """The first ``n`` flickr JPEGs (sorted by name), extracted under ``dest``."""
    with tarfile.open(FLICKR) as tar:
        members = sorted(
            (m for m in tar if m.isfile() and m.name.endswith(".jpg")), key=lambda m: m.name
        )[:n]
        for m in members:
            (dest / Path(m.name).name).write_bytes(tar.extractfile(m).read())
    return [dest / Path(m.name).name for m in members]


def time_per_image(
    fns: dict[str, Callable[[Any], Any]],
    inputs: Sequence[Any],
    repeats: int,
    clock: Callable[[], float],
) -> dict[str, float]:
    """Mean over inputs of the per-input minimum time (ms), calls interleaved."""
    best = {k: [float("inf")] * len(inputs) for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            row = best[name]
            for i, x in enumerate(inputs):
                t0 = clock()
                fn(x)
                row[i] = min(row[i], clock() - t0)
    return {k: 1e3 * sum(v) / len(v) for k, v in best.items()}


def report(title: str, ms: dict[str, float], rows: list[dict[str, Any]], images: str) -> None:
    """Print one timing line and add it as a result row (images/s per pipeline, ratios)."""
    ref = ms["open_clip"]
    parts = [f"{k} {v:.3f} ms ({ref / v:.2f}x)" for k, v in ms.items()]
    print(f"  {title:<28} " + "  ".join(parts))
    row: dict[str, Any] = {"images": images, "timing": title}
    row |= {f"{k} (img/s)": 1e3 / v for k, v in ms.items()}
    row |= {f"{k} ratio": ref / v for k, v in ms.items() if k != "open_clip"}
    rows.append(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flickr", type=int, default=200)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)

    reference = open_clip.image_transform(args.size, is_train=False)
    ours = build_preprocess(PreprocessConfig(image_size=args.size))
    draft = build_preprocess(PreprocessConfig(image_size=args.size, draft=True))

    with tempfile.TemporaryDirectory() as tmp:
        sets = {
            "photos (8)": sorted(PHOTOS.iterdir()),
            f"flickr ({args.flickr})": extract_flickr(Path(tmp), args.flickr),
        }
        sets[f"all ({sum(len(v) for v in sets.values())})"] = [p for v in sets.values() for p in v]
        rows: list[dict[str, Any]] = []
        print(f"image_size={args.size} torch_threads={args.threads} repeats={args.repeats} "
              f"clock={args.clock} (ratio = open_clip time / ours)")  # fmt: skip
        for title, paths in sets.items():
            images = [load_image(p) for p in paths]
            diff = max((ours(im) - reference(im)).abs().max().item() for im in images)
            print(f"{title}: max |ours - open_clip| = {diff:.3g}")
            fns = {"open_clip": reference, "ours": ours, "ours+draft": draft}
            timing = time_per_image(fns, images, args.repeats, clock)
            report("decoded (load excluded)", timing, rows, title)
            with_load = {
                "open_clip": lambda p: reference(Image.open(p)),
                "ours": ours,
                "ours+draft": draft,
            }
            timing = time_per_image(with_load, paths, args.repeats, clock)
            report("from disk (load included)", timing, rows, title)
            rows[-2]["max abs diff"] = rows[-1]["max abs diff"] = diff
    settings = {"image_size": args.size, "torch_threads": args.threads, "clock": args.clock}
    write_result("preprocess_speed", {"settings": settings | {"repeats": args.repeats}, "rows": rows})


if __name__ == "__main__":
    main()
