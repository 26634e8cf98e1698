"""``zeroshot_classification``: zero-shot accuracy on labelled images.

Data: any kind :func:`clipforge.eval.datasets.load_classification` reads (``folder``,
``csv`` with a label column, ``mnist``, ``archive``, ``procedural``). Class names: the
``classnames`` option (a built-in set such as ``cifar10``, a file or a list), else the
dataset's; templates: the ``templates`` option, else the built-in set named like the class
names (``cifar10``, ``cifar100``, ``mnist``; ``imagenet1k`` → OpenAI's 80), else the
dataset's (``procedural``: shape prompts). A JSON file ``{class: [prompts]}`` gives per-class
prompts (CuPL). Each class embedding is the normalised mean of its normalised prompt
embeddings; logits are ``100 · cos`` (a SigLIP sigmoid head is monotone in the cosine, so
every metric here is the same with it). Metrics: ``acc1``, ``acc5`` (>= 5 classes) and
``mean_per_class_recall``, as CLIP_benchmark defines them. Unreadable images are logged,
reported and excluded from the counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..configs import ConfigError
from ..data.data_config import DataConfig
from ..embedding import describe_input, stream_image_embeddings
from ..runtime import Precision
from ..zeroshot import class_embeddings
from .datasets import LabelledImages, Prompts, load_classification, resolve_prompts
from .metrics import classification_metrics
from .output import EvalOutput

__all__ = ["Options", "class_embeddings", "details", "image_logits", "run"]

logger = logging.getLogger("clipforge.eval")

#: Prompts for the procedural shapes ("a red circle.", ...), as the demo uses.
PROCEDURAL_TEMPLATES = ["a {c}.", "a photo of a {c}.", "a picture of a {c}."]
#: Template set used with a built-in class-name set when no templates are given.
TEMPLATES_OF_CLASSNAMES = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "mnist": "mnist",
    "imagenet1k": "openai_imagenet",
}
N_EXAMPLES = 24


@dataclass
class Options:
    """Options of ``zeroshot_classification``."""

    templates: str | list[str] | dict[str, list[str]] | None = None  # see the module docstring
    classnames: str | list[str] | None = None  # None: the dataset's
    batch_size: int = 32  # images per batch (decoded by data.num_workers workers)
    n_per_class: int = 2  # procedural data: rendered images per class
    limit: int | None = None  # evaluate an evenly spaced subset of this many images
    precision: Precision = "fp32"  # autocast

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.n_per_class < 1:
            raise ConfigError("zeroshot_classification: batch_size and n_per_class must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("zeroshot_classification: limit must be >= 1")


def image_logits(
    model: Any, classes: torch.Tensor, images: list, options: Options, workers: int, name: str
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """``(logits (N_ok, C), kept indices, failures)``; unreadable images are logged."""

    logits: list[np.ndarray] = []
    kept: list[int] = []

    def on_batch(indices: list[int], features: torch.Tensor) -> None:
        kept.extend(indices)
        feats = F.normalize(features.to(classes.device, torch.float32), dim=-1)
        logits.append((100.0 * feats @ classes.T).cpu().numpy())

    failed = stream_image_embeddings(
        model,
        images,
        on_batch,
        batch_size=options.batch_size,
        num_workers=workers,
        precision=options.precision,
    )
    failures = [(describe_input(images[i], i), reason) for i, reason in failed]
    for item, reason in failures:
        logger.warning("%s: skipped %s: %s", name, item, reason)
    if not kept:
        raise RuntimeError(f"{name}: no readable image")
    return np.concatenate(logits), np.asarray(kept, dtype=np.int64), failures


def _task(data: DataConfig, options: Options) -> tuple[LabelledImages, Prompts]:
    task = load_classification(data, options.classnames, options.limit, options.n_per_class)
    templates = options.templates
    if templates is None and isinstance(options.classnames, str):
        templates = TEMPLATES_OF_CLASSNAMES.get(options.classnames)
    if templates is None:
        templates = task.templates
    if templates is None:
        templates = PROCEDURAL_TEMPLATES if data.kind == "procedural" else "openai_imagenet"
    return task, resolve_prompts(templates, task.classnames)


def _spread(rows: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of ``rows``, evenly spaced."""
    return (
        rows[np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))] if len(rows) else rows
    )


def _examples(task: LabelledImages, kept: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
    """Report material: a few hits and misses, and a sample of the similarity matrix."""
    order = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    labels = task.labels[kept]
    hits = _spread(np.flatnonzero(order[:, 0] == labels), N_EXAMPLES // 2)
    misses = _spread(np.flatnonzero(order[:, 0] != labels), N_EXAMPLES - len(hits))
    rows = sorted([*hits.tolist(), *misses.tolist()])
    sample = np.unique(np.linspace(0, len(kept) - 1, min(12, len(kept))).round().astype(int))
    columns = np.arange(min(20, logits.shape[1]))
    return {
        "examples": [
            {
                "input": str(task.images[kept[r]])
                if isinstance(task.images[kept[r]], str)
                else None,
                "label": int(labels[r]),
                "top5": order[r].tolist(),
            }
            for r in rows
        ],
        "_example_images": [task.images[kept[r]] for r in rows],
        "similarity_sample": (logits[np.ix_(sample, columns)] / 100.0).tolist(),
        "similarity_rows": [int(labels[r]) for r in sample],
        "_similarity_images": [task.images[kept[r]] for r in sample],
    }


def details(model: Any, data: DataConfig | None, options: Options) -> EvalOutput:
    """Metrics, counts, confusion matrix, per-class recall and examples."""
    if data is None:
        raise ConfigError("zeroshot_classification needs a dataset (data.kind folder, csv, ...)")
    task, prompts = _task(data, options)
    classes = class_embeddings(model, task.classnames, prompts, precision=options.precision)
    logits, kept, failures = image_logits(
        model, classes, task.images, options, data.num_workers, "zeroshot_classification"
    )
    labels = task.labels[kept]
    failures = task.failures + failures
    n_classes = len(task.classnames)
    if labels.max() >= n_classes:
        raise ConfigError(f"label {int(labels.max())} but only {n_classes} class names")
    predictions = logits.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    support = confusion.sum(axis=1)
    recall = [float(confusion[c, c] / support[c]) if support[c] else None for c in range(n_classes)]
    return EvalOutput(
        metrics=classification_metrics(logits, labels),
        counts={
            "images": len(task.images) + len(task.failures),
            "evaluated": len(kept),
            "failed": len(failures),
            "classes": n_classes,
        },
        failures=failures,
        details={
            "classnames": task.classnames,
            "confusion_matrix": confusion.tolist(),
            "per_class_recall": recall,
            "support": support.tolist(),
            "n_prompts": sum(len(v) for v in prompts.values())
            if isinstance(prompts, dict)
            else len(prompts) * n_classes,
            **_examples(task, kept, logits),
        },
    )


def run(model: Any, data: DataConfig | None, options: Options) -> dict[str, float]:
    """Zero-shot classification metrics of ``model`` on ``data``."""
    return details(model, data, options).metrics
