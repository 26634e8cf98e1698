"""Localisation scores of a heat map against a box: pointing game, IoU, chance."""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels


def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of ``box``."""
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    mask[max(0, y0) : y1, max(0, x0) : x1] = True
    return mask


def pointing_hit(heat: np.ndarray, box: Box) -> bool:
    """Pointing game (Zhang et al., ECCV 2016): is the map's maximum inside ``box``?
    Ties count as a hit if any maximal pixel is inside."""
    peak = heat == heat.max()
    return bool((peak & box_mask(box, heat.shape)).any())


def threshold_iou(heat: np.ndarray, box: Box, threshold: float = 0.5) -> float:
    """IoU of ``{heat ≥ min + threshold · (max − min)}`` with ``box``."""
    lo, hi = float(heat.min()), float(heat.max())
    region = heat >= lo + threshold * (hi - lo)
    mask = box_mask(box, heat.shape)
    union = (region | mask).sum()
    return float((region & mask).sum() / union) if union else 0.0


def chance(box: Box, shape: tuple[int, int]) -> float:
    """Pointing-game score of a uniformly random peak: the box's share of the image."""
    return float(box_mask(box, shape).sum() / (shape[0] * shape[1]))
