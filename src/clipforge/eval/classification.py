"""``zeroshot_classification``: zero-shot accuracy on class folders or procedural shapes.

Data: ``folder`` (``root/<class>/*``; class names and templates from the folder source's
options) or ``procedural`` (single rendered objects of every colour+shape class, for the
pairs of ``data.options.split``). Metrics: ``acc1``, ``acc5`` (>= 5 classes) and
``mean_per_class_recall``, as CLIP_benchmark defines them (:mod:`clipforge.eval.metrics`).
Unreadable images are logged and excluded from the counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..configs import ConfigError
from ..data.config import DataConfig
from ..data.sources import validate_options
from .metrics import classification_metrics

__all__ = ["Options", "run"]

logger = logging.getLogger("clipforge.eval")

#: Prompts for the procedural shapes ("a red circle.", ...), as the demo uses.
PROCEDURAL_TEMPLATES = ["a {c}.", "a photo of a {c}.", "a picture of a {c}."]


@dataclass
class Options:
    """Options of ``zeroshot_classification``."""

    templates: str | list[str] | None = None  # None: the folder's templates / shape prompts
    batch_size: int = 32  # images per batch (decoded by data.num_workers workers)
    n_per_class: int = 2  # procedural data: rendered images per class

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.n_per_class < 1:
            raise ConfigError("zeroshot_classification: batch_size and n_per_class must be >= 1")


def _folder_task(data: DataConfig, options: Options) -> tuple[list[str], list[Any], Any, list]:
    from ..data.folder import class_names, scan_folder

    source = validate_options("folder", data.options)
    folders, samples = scan_folder(data.path)
    templates = options.templates if options.templates is not None else source.templates
    labels = [label for _, label in samples]
    return class_names(folders, source.classnames), [p for p, _ in samples], labels, templates


def _procedural_task(data: DataConfig, options: Options) -> tuple[list[str], list, list, Any]:
    from ..data.procedural import render_zero_shot, zero_shot_task

    source = validate_options("procedural", data.options)
    classnames, samples = zero_shot_task(source.split, options.n_per_class)
    rendered = render_zero_shot(samples, data.image_size or 64, source.seed or 0)
    templates = options.templates if options.templates is not None else PROCEDURAL_TEMPLATES
    return classnames, [image for image, _ in rendered], [y for _, y in rendered], templates


def _logits(model: Any, classifier: Any, images: list, batch_size: int, workers: int) -> tuple:
    """``(logits (N_ok, C), kept input indices)``; unreadable images logged and left out."""
    from ..embedding import describe_input, stream_image_embeddings

    logits: list[np.ndarray] = []
    kept: list[int] = []

    def on_batch(indices: list[int], features: Any) -> None:
        kept.extend(indices)
        logits.append(classifier.logits(features).cpu().numpy())

    _ = classifier.class_embeddings  # built before the image loop
    failed = stream_image_embeddings(
        model, images, on_batch, batch_size=batch_size, num_workers=workers
    )
    for index, reason in failed:
        logger.warning(
            "zeroshot_classification: skipped %s: %s", describe_input(images[index], index), reason
        )
    if not kept:
        raise RuntimeError("zeroshot_classification: no readable image")
    return np.concatenate(logits), np.asarray(kept, dtype=np.int64)


def run(model: Any, data: DataConfig | None, options: Options) -> dict[str, float]:
    """Zero-shot classification metrics of ``model`` on ``data``."""
    from ..zeroshot import ZeroShotClassifier

    if data is None:
        raise ConfigError(
            "zeroshot_classification needs a dataset (data.kind folder or procedural)"
        )
    task = _folder_task if data.kind == "folder" else _procedural_task
    classnames, images, labels, templates = task(data, options)
    classifier = ZeroShotClassifier(model, classnames, templates=templates)
    logits, kept = _logits(model, classifier, images, options.batch_size, data.num_workers)
    return classification_metrics(logits, np.asarray(labels)[kept])
