"""``zeroshot_retrieval``: image↔text recall@K on a ``filepath,caption`` table.

Data: ``csv`` (CSV/TSV/Parquet; the table source's options: columns, root, format, ...) or an
``archive`` holding such a table. Rows with the same image path are one image with several
captions: an image→text query hits at K if any of its captions is in the top K. Scores are
computed in blocks of ``chunk_size`` queries (:func:`~clipforge.eval.rank_metrics.chunked_ranks`),
so memory grows with N·k, not N². Unreadable images are logged, reported and excluded with
their captions. Metrics: ``image_to_text_R@K``, ``text_to_image_R@K``, mean/median ranks.

A table with a ``language`` column (``data.options.language_column``) is also scored per
language: for language L, the captions in L against the images that have one (as
multilingual benchmarks such as XM3600 report), in ``details["per_language"]`` (metrics
and counts per language), which ``clipforge eval`` prints and results tables show as rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..configs import ConfigError
from ..data.data_config import DataConfig
from ..embedding import embed_images, embed_texts
from ..runtime import Precision
from .datasets import load_captioned, load_captions
from .output import EvalOutput
from .rank_metrics import chunked_ranks, rank_metrics

__all__ = ["Options", "details", "per_language", "read_pairs", "run"]

logger = logging.getLogger("clipforge.eval")
N_EXAMPLES = 8


@dataclass
class Options:
    """Options of ``zeroshot_retrieval``."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    batch_size: int = 32  # images per batch (decoded by data.num_workers workers)
    chunk_size: int = 1024  # queries per score block
    limit: int | None = None  # evaluate an evenly spaced subset of this many images
    precision: Precision = "fp32"  # autocast

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1 or self.batch_size < 1 or self.chunk_size < 1:
            raise ConfigError("zeroshot_retrieval: ks, batch_size and chunk_size must be >= 1")


def read_pairs(data: DataConfig) -> tuple[list[str], list[list[str]]]:
    """Unique image paths (first-appearance order) and the captions of each."""
    return load_captions(data)


def _examples(paths: list[str], texts: list[str], owner: np.ndarray, ranks: Any) -> dict:
    queries = np.unique(np.linspace(0, len(paths) - 1, min(N_EXAMPLES, len(paths))).astype(int))
    caption_queries = [int(np.flatnonzero(owner == q)[0]) for q in queries]
    return {
        "image_to_text": [
            {
                "image": paths[q],
                "top": [texts[t] for t in ranks.i2t_top[q][:5]],
                "hits": [bool(owner[t] == q) for t in ranks.i2t_top[q][:5]],
            }
            for q in queries
        ],
        "text_to_image": [
            {
                "caption": texts[t],
                "top": [paths[i] for i in ranks.t2i_top[t][:5]],
                "hits": [bool(i == owner[t]) for i in ranks.t2i_top[t][:5]],
            }
            for t in caption_queries
        ],
    }


def details(model: Any, data: DataConfig | None, options: Options) -> EvalOutput:
    """Recall@K both ways, ranks, counts and example retrievals of ``model`` on ``data``."""

    if data is None:
        raise ConfigError("zeroshot_retrieval needs a dataset (data.kind csv or archive)")
    pairs = load_captioned(data, options.limit)
    paths, captions = pairs.images, pairs.captions
    images = embed_images(
        model,
        paths,
        batch_size=options.batch_size,
        num_workers=data.num_workers,
        precision=options.precision,
    )
    for path, reason in images.failures:
        logger.warning("zeroshot_retrieval: skipped %s: %s", path, reason)
    if len(images) == 0:
        raise RuntimeError(f"zeroshot_retrieval: no readable image in {data.path!r}")
    texts: list[str] = []
    owner: list[int] = []
    languages: list[str] = []
    for row, index in enumerate(images.indices):
        texts.extend(captions[index])
        owner.extend([row] * len(captions[index]))
        if pairs.languages is not None:
            languages.extend(pairs.languages[index])
    text_emb = embed_texts(model, texts, precision=options.precision)
    ranks = chunked_ranks(
        images.embeddings, text_emb, owner, k=max(max(options.ks), 5), chunk_size=options.chunk_size
    )
    kept_paths = [paths[i] for i in images.indices]
    extra = {}
    if pairs.languages is not None:
        extra["per_language"] = per_language(
            images.embeddings, text_emb, np.asarray(owner), np.asarray(languages), options
        )
    return EvalOutput(
        metrics=rank_metrics(ranks, options.ks),
        counts={
            "images": len(paths),
            "evaluated": len(images),
            "failed": len(images.failures),
            "texts": len(texts),
        },
        failures=list(images.failures),
        details={**_examples(kept_paths, texts, np.asarray(owner), ranks), **extra},
    )


def per_language(
    image_emb: Any, text_emb: Any, owner: np.ndarray, languages: np.ndarray, options: Options
) -> dict[str, dict[str, Any]]:
    """``{language: {"metrics": ..., "counts": {"images", "texts"}}}``: each language's
    captions retrieved among (and retrieving) the images that have a caption in it."""
    out: dict[str, dict[str, Any]] = {}
    for language in sorted(set(languages.tolist())):
        mine = np.flatnonzero(languages == language)
        rows, local_owner = np.unique(owner[mine], return_inverse=True)
        ranks = chunked_ranks(
            np.asarray(image_emb)[rows], np.asarray(text_emb)[mine], local_owner,
            k=max(max(options.ks), 5), chunk_size=options.chunk_size,
        )  # fmt: skip
        out[language] = {
            "metrics": rank_metrics(ranks, options.ks),
            "counts": {"images": len(rows), "texts": len(mine)},
        }
    return out


def run(model: Any, data: DataConfig | None, options: Options) -> dict[str, float]:
    """Recall@K both ways of ``model`` on the table ``data``."""
    return details(model, data, options).metrics
