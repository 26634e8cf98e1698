"""The ``procedural`` data kind: :class:`ProceduralCaptions` as a training source.

Options (``data.options``, :class:`Options`): ``size`` (number of distinct samples, default
100000), ``difficulty`` (see ``DIFFICULTIES``, default ``"mixed"``), ``split`` (default
``"train"``) and ``seed`` (content seed, default: the run's seed). ``data.image_size`` is the
rendered size (default 64); the model's preprocessing then resizes to its own input size.

Evaluation on the shapes lives in the evaluator registry (``procedural_zeroshot`` in
:mod:`clipforge.eval.procedural_zeroshot`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset

from ..configs import ConfigError
from .loader import SafeDataset
from .procedural import (
    DIFFICULTIES,
    SPLITS,
    ProceduralCaptions,
    render_zero_shot,
    zero_shot_task,
)
from .samples import LabelledImages
from .sources import BuildContext, source_options

if TYPE_CHECKING:
    pass

__all__ = ["Options", "build"]


@dataclass
class Options:
    """``data.options`` of the ``procedural`` kind."""

    size: int = 100_000
    difficulty: str = "mixed"
    split: str = "train"
    seed: int | None = None  # content seed; None: the run's seed

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"data.options.size must be >= 1, got {self.size}")
        if self.difficulty not in DIFFICULTIES:
            raise ConfigError(
                f"data.options.difficulty: {self.difficulty!r} is not one of {list(DIFFICULTIES)}"
            )
        if self.split not in SPLITS:
            raise ConfigError(f"data.options.split: {self.split!r} is not one of {list(SPLITS)}")


def build(ctx: BuildContext) -> Dataset:
    """A map-style procedural dataset of ``(image, tokens)``; failures become ``None``."""
    opts: Options = source_options(ctx.cfg, "procedural")
    dataset = ProceduralCaptions(
        opts.size,
        image_size=ctx.cfg.image_size or 64,
        seed=ctx.seed if opts.seed is None else opts.seed,
        split=opts.split,
        transform=ctx.transform,
        tokenizer=ctx.tokenize,
        difficulty=opts.difficulty,
    )
    return SafeDataset(dataset, name="procedural")


def labelled_images(
    data: Any, *, limit: int | None, n_per_class: int = 2, n_classes: int | None = None
) -> LabelledImages:
    """Rendered colour+shape scenes of a split, ``n_per_class`` per class, as labelled images."""
    opts = data.typed_options()
    names, samples = zero_shot_task(opts.split, n_per_class)
    rendered = render_zero_shot(samples, data.image_size or 64, opts.seed or 0)
    labels = np.asarray([y for _, y in rendered], dtype=np.int64)
    return LabelledImages([image for image, _ in rendered], labels, list(names), None)
