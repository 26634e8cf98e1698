"""Text in images (``benchmarks/search.py`` rows; also runs alone): OCR + CLIP fusion vs CLIP
alone on generated screenshots, and indexing speed with and without ``--ocr``.

The library: ``--ocr-screens`` generated screenshots (a coloured title bar and 3 lines of
2 words each, at random sizes and positions, Pillow's built-in font) plus ``--ocr-photos``
Flickr photos as distractors (``../shared/data/flickr8k-1k.tar.gz``, when present). The
words are pseudo-words drawn from a seeded syllable generator — a vocabulary no model was
trained on — so CLIP cannot have learnt them. Queries: ``--ocr-queries`` words that occur in
the library; the relevant images are the screenshots showing the word. Rows: recall@10 of
CLIP alone (``ocr="off"``), text only (``"only"``) and the fusion (``"auto"``, RRF k=60),
and images/s of ``Index.sync`` on the same files without and with OCR.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import clipforge
from clipforge.index import Index
from results import write_result

SHARED = Path(__file__).resolve().parents[2] / "shared"
ONSETS = [
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "z",
    "br",
    "dr",
    "gl",
    "kr",
    "pl",
    "st",
    "tr",
]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]


def pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct pronounceable non-words of 3-4 syllables (e.g. ``dravoteku``)."""
    words: set[str] = set()
    while len(words) < n:
        syllables = rng.integers(3, 5)
        words.add("".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)))
    return sorted(words)


def screenshot(path: Path, words: list[str], rng: np.random.Generator) -> None:
    """A phone-like screenshot: title bar, three lines of two words, light background."""
    width, height = int(rng.integers(360, 560)), int(rng.integers(300, 480))
    background = tuple(int(v) for v in rng.integers(225, 256, 3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    bar = tuple(int(v) for v in rng.integers(30, 160, 3))
    draw.rectangle((0, 0, width, 36), fill=bar)
    y = 56
    for row in range(3):
        size = int(rng.integers(20, 32))
        font = ImageFont.load_default(size=size)
        x = int(rng.integers(12, 40))
        draw.text((x, y), " ".join(words[2 * row : 2 * row + 2]), fill=(20, 20, 20), font=font)
        y += size + int(rng.integers(18, 40))
    image.save(path)


def build_library(folder: Path, screens: int, photos: int, seed: int) -> dict[str, set[str]]:
    """Write the screenshots (and copy distractor photos); returns word -> screenshot names."""
    rng = np.random.default_rng(seed)
    vocabulary = pseudo_words(max(60, screens * 4), rng)
    folder.mkdir(parents=True, exist_ok=True)
    shows: dict[str, set[str]] = {}
    for i in range(screens):
        words = [str(w) for w in rng.choice(vocabulary, 6, replace=False)]
        name = f"screen{i:04d}.png"
        screenshot(folder / name, words, rng)
        for word in words:
            shows.setdefault(word, set()).add(name)
    archive = SHARED / "data" / "flickr8k-1k.tar.gz"
    if photos and archive.exists():
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.endswith(".jpg")][:photos]
            for member in members:
                source = tar.extractfile(member)
                if source is not None:
                    (folder / Path(member.name).name).write_bytes(source.read())
    return shows


def recall_at_10(index: Index, queries: list[str], shows: dict[str, set[str]], mode: str) -> float:
    """Mean over queries of |top-10 ∩ relevant| / min(|relevant|, 10)."""
    total = 0.0
    for word in queries:
        hits = index.search(word, k=10, ocr=mode)  # type: ignore[arg-type]
        found = {Path(h.path).name for h in hits}
        total += len(found & shows[word]) / min(len(shows[word]), 10)
    return total / len(queries)


def bench_ocr(args, model, describe: str) -> list[dict]:
    """Build the library, index it without and with OCR, measure recall@10 and speed."""
    work = Path(tempfile.mkdtemp())
    folder = work / "library"
    shows = build_library(folder, args.ocr_screens, args.ocr_photos, seed=0)
    files = sum(1 for _ in folder.iterdir())
    rng = np.random.default_rng(1)
    queries = sorted(rng.choice(sorted(shows), min(args.ocr_queries, len(shows)), replace=False))
    print(f"\n== text in images: {args.ocr_screens} screenshots + {files - args.ocr_screens} "
          f"photos, {len(queries)} pseudo-word queries; model {describe} ==")  # fmt: skip
    torch.set_num_threads(args.ocr_threads)
    plain = Index.open(work / "plain", model)
    start = time.perf_counter()
    plain.sync([folder], batch_size=32, num_workers=0, progress=False)
    plain_s = time.perf_counter() - start
    index = Index.open(work / "ocr", model)
    start = time.perf_counter()
    report = index.sync([folder], batch_size=32, num_workers=0, progress=False, ocr=True)
    ocr_s = time.perf_counter() - start
    rows = []
    for mode, label in (("off", "CLIP alone"), ("only", "OCR text only"), ("auto", "OCR + CLIP (RRF k=60)")):  # fmt: skip
        value = recall_at_10(index, queries, shows, mode)
        print(f"{label:>24}: recall@10 {value:.3f}")
        rows.append({"task": f"text in images, {files} images", "index": label, "R@10": value})
    ocr_only = report.ocr_read / report.ocr_seconds
    print(f"Index.sync {files / plain_s:.2f} images/s without OCR, {files / ocr_s:.2f} with "
          f"(the OCR pass alone {ocr_only:.2f} images/s)")  # fmt: skip
    for label, seconds in (("Index.sync", plain_s), ("Index.sync --ocr", ocr_s)):
        rows.append({"task": f"indexing {files} images ({describe})", "index": label,
                     "images/s": files / seconds, "s": seconds})  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ocr-screens", type=int, default=120, help="generated screenshots")
    parser.add_argument("--ocr-photos", type=int, default=60, help="Flickr distractor photos")
    parser.add_argument("--ocr-queries", type=int, default=100)
    parser.add_argument("--ocr-threads", type=int, default=2, help="torch threads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--weights", default=None, help="trained model: run dir or checkpoint")
    args = parser.parse_args()
    if args.weights:
        model, describe = clipforge.load(args.weights), args.weights
    else:
        torch.manual_seed(0)
        model, describe = clipforge.create_model("ViT-B-32").eval(), "ViT-B-32, random weights"
    write_result("search_ocr", {"rows": bench_ocr(args, model, describe)})


if __name__ == "__main__":
    main()
