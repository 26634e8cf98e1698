"""Throughput of ``clipforge`` ClipTokenizer vs ``open_clip`` SimpleTokenizer.

Builds 10,000 captions from the Flickr8k-1k captions (1,000 captions x 10
variants), checks that both tokenizers produce identical ids and prints the
speed ratio. "cold" = fresh tokenizer instances (empty BPE caches), "warm" =
the same call repeated on the same instances.

Usage: python benchmarks/tokenizer_speed.py [--captions PATH] [--repeats N]
"""

from __future__ import annotations

import argparse
import csv
import io
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from open_clip.tokenizer import SimpleTokenizer

from clipforge.tokenizer import ClipTokenizer
from results import write_result

DEFAULT_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k-1k.tar.gz"


def read_captions(tar_path: Path) -> list[str]:
    """Read the caption column of ``captions.tsv`` inside the tar archive."""
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("captions.tsv"))
        data = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
    rows = list(csv.reader(io.StringIO(data), delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row[1] for row in rows[1:] if len(row) >= 2]


def build_corpus(captions: list[str], size: int = 10_000) -> list[str]:
    """Deterministic caption variants (prompt templates, casing, punctuation)."""
    variants: list[Callable[[str], str]] = [
        lambda c: c,
        lambda c: c.lower(),
        lambda c: f"a photo of {c.lower()}",
        lambda c: c.upper(),
        lambda c: f"{c.rstrip(' .')}!",
        lambda c: f"an image showing: {c}",
        lambda c: c.title(),
        lambda c: c.replace(" a ", " the "),
        lambda c: f"{c} ({len(c)} chars)",
        lambda c: f'"{c.strip()}" - a caption',
    ]
    corpus = [fn(c) for fn in variants for c in captions]
    while len(corpus) < size:
        corpus += corpus
    return corpus[:size]


def time_call(make: Callable[[], Callable], texts: list[str], repeats: int) -> tuple:
    """Best cold and warm wall time of tokenizing ``texts``; returns last output."""
    cold, warm = [], []
    out = None
    for _ in range(repeats):
        tok = make()
        start = time.perf_counter()
        out = tok(texts)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        tok(texts)
        warm.append(time.perf_counter() - start)
    return min(cold), min(warm), out


def main() -> None:
    """Run the benchmark and print timings and speed ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=Path, default=DEFAULT_TAR)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    texts = build_corpus(read_captions(args.captions))
    ref_cold, ref_warm, ref_ids = time_call(SimpleTokenizer, texts, args.repeats)
    our_cold, our_warm, our_ids = time_call(ClipTokenizer, texts, args.repeats)
    identical = torch.equal(ref_ids, our_ids)

    print(f"texts: {len(texts)}  identical ids: {identical}")
    print(f"open_clip SimpleTokenizer: cold {ref_cold:.3f}s  warm {ref_warm:.3f}s")
    print(f"clipforge ClipTokenizer:   cold {our_cold:.3f}s  warm {our_warm:.3f}s")
    print(f"speed ratio (cold): {ref_cold / our_cold:.1f}x")
    print(f"speed ratio (warm): {ref_warm / our_warm:.1f}x")
    n = len(texts)
    rows = [
        {"tokenizer": name, "cold (texts/s)": n / cold, "warm (texts/s)": n / warm,
         "ratio cold": ref_cold / cold, "ratio warm": ref_warm / warm,
         "ids identical to open_clip": identical}
        for name, cold, warm in [("open_clip SimpleTokenizer", ref_cold, ref_warm),
                                 ("clipforge ClipTokenizer", our_cold, our_warm)]
    ]  # fmt: skip
    write_result("tokenizer_speed", {"texts": n, "repeats": args.repeats, "rows": rows})
    if not identical:
        raise SystemExit("token ids differ from open_clip")


if __name__ == "__main__":
    main()
