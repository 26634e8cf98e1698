"""The image transform of a :class:`PreprocessConfig`: fixed-size pixels or NaFlex patches."""

from __future__ import annotations

from ..configs.preprocess import PreprocessConfig
from .naflex import NaFlexPreprocess
from .transforms import Preprocess


def image_transform(cfg: PreprocessConfig) -> Preprocess | NaFlexPreprocess:
    """The picklable image → model-input transform for ``cfg``: a :class:`Preprocess`
    (``(3, S, S)`` tensors) or, with ``max_num_patches`` set, a :class:`NaFlexPreprocess`
    (:class:`NaFlexPatches`)."""
    return NaFlexPreprocess(cfg) if cfg.max_num_patches is not None else Preprocess(cfg)
