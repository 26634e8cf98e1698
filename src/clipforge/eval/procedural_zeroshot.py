"""``procedural_zeroshot``: what training has always scored on the procedural shapes.

Zero-shot colour+shape classification of single rendered objects among all 35 class names,
on the held-out pairs (``test``: compositional generalisation) and on seen pairs
(``val``). Metrics: ``zeroshot_<split>_acc`` per split. Needs no dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..configs import ConfigError
from ..data.procedural import render_zero_shot, zero_shot_task
from ..zeroshot import ZeroShotClassifier
from .registry import evaluate

__all__ = ["Options", "evaluate_zero_shot", "run"]


@dataclass
class Options:
    """Options of ``procedural_zeroshot``."""

    image_size: int = 64
    n_per_class: int = 2
    seed: int = 0
    splits: list[str] = field(default_factory=lambda: ["test", "val"])
    templates: list[str] | None = None  # None: "a/an <class>" prompts, one per class

    def __post_init__(self) -> None:
        if self.image_size < 1 or self.n_per_class < 1:
            raise ConfigError("procedural_zeroshot: image_size and n_per_class must be >= 1")
        unknown = [s for s in self.splits if s not in ("train", "val", "test", "all")]
        if unknown:
            raise ConfigError(f"procedural_zeroshot: unknown splits {unknown}")


def run(model: Any, data: Any, options: Options) -> dict[str, float]:
    """``zeroshot_<split>_acc`` for each split of ``options.splits``."""

    del data  # the shapes are rendered here
    metrics = {}
    for split in options.splits:
        classnames, samples = zero_shot_task(split, options.n_per_class)
        if options.templates is None:
            prompts = [("an " if c[0] in "aeiou" else "a ") + c for c in classnames]
            classifier = ZeroShotClassifier(model, prompts, templates=["{c}"])
        else:
            classifier = ZeroShotClassifier(model, classnames, templates=options.templates)
        rendered = render_zero_shot(samples, options.image_size, options.seed)
        result = classifier.predict([image for image, _ in rendered], top_k=1, progress=False)
        labels = np.asarray([label for _, label in rendered])[result.indices]
        metrics[f"zeroshot_{split}_acc"] = float((result.predictions == labels).mean())
    return metrics


def evaluate_zero_shot(
    clip: Any, image_size: int = 64, n_per_class: int = 2, seed: int = 0
) -> dict[str, float]:
    """Zero-shot colour+shape accuracy on procedural held-out (test) and seen (val) pairs."""

    options = {"image_size": image_size, "n_per_class": n_per_class, "seed": seed}
    return evaluate("procedural_zeroshot", clip, options)
