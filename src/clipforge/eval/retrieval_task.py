"""``zeroshot_retrieval``: image↔text recall@K on a ``filepath,caption`` table.

Data: ``csv`` (CSV/TSV/Parquet; the table source's options: columns, root, format, ...).
Rows with the same image path are one image with several captions: an image→text query
hits at K if any of its captions is in the top K. Unreadable images are logged and
excluded with their captions. Metrics: ``image_to_text_R@K``, ``text_to_image_R@K``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..configs import ConfigError
from ..data.config import DataConfig
from .retrieval import retrieval_recall

__all__ = ["Options", "read_pairs", "run"]

logger = logging.getLogger("clipforge.eval")


@dataclass
class Options:
    """Options of ``zeroshot_retrieval``."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    batch_size: int = 32  # images per batch (decoded by data.num_workers workers)

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1 or self.batch_size < 1:
            raise ConfigError("zeroshot_retrieval: ks and batch_size must be >= 1")


def read_pairs(data: DataConfig) -> tuple[list[str], list[list[str]]]:
    """Unique image paths (first-appearance order) and the captions of each."""
    from ..data import tabular

    def identity(x: Any) -> Any:
        return x

    table = tabular.build(data, identity, identity, seed=0, rank=0, world_size=1)
    captions: dict[str, list[str]] = {}
    for row in range(len(table)):
        raw, caption = table.image_path(row), table.caption(row)
        if raw and caption and caption.strip():
            captions.setdefault(table.resolve(raw), []).append(caption)
    return list(captions), list(captions.values())


def run(model: Any, data: DataConfig | None, options: Options) -> dict[str, float]:
    """Recall@K both ways of ``model`` on the table ``data``."""
    from ..embedding import embed_images, embed_texts

    if data is None:
        raise ConfigError("zeroshot_retrieval needs a dataset (data.kind csv)")
    paths, captions = read_pairs(data)
    images = embed_images(model, paths, batch_size=options.batch_size, num_workers=data.num_workers)
    for path, reason in images.failures:
        logger.warning("zeroshot_retrieval: skipped %s: %s", path, reason)
    if len(images) == 0:
        raise RuntimeError(f"zeroshot_retrieval: no readable image in {data.path!r}")
    texts: list[str] = []
    texts_of_image: list[list[int]] = []
    for index in images.indices:
        texts_of_image.append(list(range(len(texts), len(texts) + len(captions[index]))))
        texts.extend(captions[index])
    text_emb = embed_texts(model, texts)
    return retrieval_recall(images.embeddings, text_emb, texts_of_image, ks=options.ks)
