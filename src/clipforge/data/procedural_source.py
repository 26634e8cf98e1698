"""The ``procedural`` data kind: :class:`ProceduralCaptions` as a training source.

Options (``data.options``): ``size`` (number of distinct samples, default 100000),
``difficulty`` (see ``DIFFICULTIES``, default ``"mixed"``), ``split`` (default ``"train"``)
and ``seed`` (content seed, default: the run's seed). ``data.image_size`` is the rendered
size (default 64); the model's preprocessing then resizes to its own input size.

:func:`evaluate_zero_shot` is the training loop's evaluation hook: zero-shot colour+shape
classification on the held-out pairs (compositional generalisation) and on seen pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .loader import SafeDataset
from .procedural import ProceduralCaptions, render_zero_shot, zero_shot_task

if TYPE_CHECKING:
    from ..train.config import DataConfig

OPTIONS: dict[str, Any] = {"size": 100_000, "difficulty": "mixed", "split": "train", "seed": None}


def build(
    cfg: DataConfig,
    transform: Callable[[Any], torch.Tensor],
    tokenize: Callable[[str], torch.Tensor],
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> Dataset:
    """A map-style procedural dataset of ``(image, tokens)``; failures become ``None``."""
    unknown = sorted(set(cfg.options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown data.options {unknown} for kind 'procedural'; valid: {sorted(OPTIONS)}"
        )
    opts = {**OPTIONS, **cfg.options}
    dataset = ProceduralCaptions(
        int(opts["size"]),
        image_size=cfg.image_size or 64,
        seed=int(seed if opts["seed"] is None else opts["seed"]),
        split=str(opts["split"]),
        transform=transform,
        tokenizer=tokenize,
        difficulty=str(opts["difficulty"]),
    )
    return SafeDataset(dataset, name="procedural")


def evaluate_zero_shot(
    clip: torch.nn.Module, image_size: int = 64, n_per_class: int = 2, seed: int = 0
) -> dict[str, float]:
    """Zero-shot colour+shape accuracy on procedural held-out (test) and seen (val) pairs."""
    from ..zeroshot import ZeroShotClassifier

    metrics = {}
    for split in ("test", "val"):
        classnames, samples = zero_shot_task(split, n_per_class)
        prompts = [("an " if c[0] in "aeiou" else "a ") + c for c in classnames]
        rendered = render_zero_shot(samples, image_size, seed)
        classifier = ZeroShotClassifier(clip, prompts, templates=["{c}"])
        result = classifier.predict([image for image, _ in rendered], top_k=1, progress=False)
        labels = np.asarray([label for _, label in rendered])[result.indices]
        metrics[f"zeroshot_{split}_acc"] = float((result.predictions == labels).mean())
    return metrics
