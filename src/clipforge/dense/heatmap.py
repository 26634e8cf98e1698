"""``clipforge.heatmap``: per-text patch similarity maps, upsampled to the image, and overlays."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UsageError
from ..models.protocols import ClipModel
from ..preprocess import build_preprocess, load_image
from .methods import METHODS
from .towers import last_block_input, vit_parts

#: the best pointing game of ``benchmarks/dense.py`` (held-out procedural scenes; see
#: benchmarks/results/dense.json)
DEFAULT_METHOD = "gradcam"


@dataclass
class HeatmapResult:
    """``maps``: ``(T, H, W)`` float32 in [0, 1] at the image's size (each text's map
    min–max scaled); ``grid``: ``(T, g, g)`` raw scores (cosines; Grad-CAM: ≥ 0 saliency)."""

    texts: list[str]
    method: str
    maps: np.ndarray
    grid: np.ndarray


def _image(image: Image.Image | str | Path) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")

    return load_image(image).convert("RGB")


def _unit_scale(maps: torch.Tensor) -> torch.Tensor:
    """Min–max scale each ``(H, W)`` map to [0, 1] (a constant map becomes zeros)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def heatmap(
    model: torch.nn.Module,
    image: Image.Image | str | Path,
    texts: str | Sequence[str],
    method: str = DEFAULT_METHOD,
) -> HeatmapResult:
    """Where in ``image`` each text matches, by ``method`` (see :data:`METHODS`).

    The image is squashed to the model's input size (the model's normalisation, no crop),
    so the map covers the whole image and is upsampled bilinearly to its size. Supports
    CLIP ViT and SigLIP image towers (``ConfigError`` for others).
    """
    if method not in METHODS:
        raise UsageError(
            f"unknown heat-map method {method!r}; expected one of {', '.join(METHODS)}"
        )
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise UsageError("heatmap needs at least one text")
    parts = vit_parts(model)
    # callers hand a CLIP typed as nn.Module; the protocol gives its attributes real types
    clip = cast(ClipModel, model)
    pil = _image(image)
    cfg = dataclasses.replace(clip.preprocess_config, resize_mode="squash")
    device = next(clip.parameters()).device
    pixels = build_preprocess(cfg)(pil)[None].to(device)
    with torch.no_grad():
        text_emb = clip.encode_text(clip.tokenize(texts).to(device), normalize=True)
        x = last_block_input(parts, pixels)
        grid = METHODS[method](parts, x, text_emb.to(x.dtype))[0].float()
    up = F.interpolate(grid[None], size=(pil.height, pil.width), mode="bilinear")[0]
    return HeatmapResult(texts, method, _unit_scale(up).cpu().numpy(), grid.cpu().numpy())


def _colours(heat: np.ndarray, cmap: str) -> np.ndarray:
    """``(H, W)`` in [0, 1] → ``(H, W, 3)`` uint8 via matplotlib's ``cmap`` (a black–red–
    yellow ramp without matplotlib)."""
    try:
        import matplotlib

        return (matplotlib.colormaps[cmap](heat)[..., :3] * 255).astype(np.uint8)
    except ImportError:
        ramp = np.stack([np.clip(2 * heat, 0, 1), np.clip(2 * heat - 1, 0, 1), 0 * heat], -1)
        return (ramp * 255).astype(np.uint8)


def overlay(
    image: Image.Image | str | Path, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet"
) -> Image.Image:
    """``image`` blended with a colour-mapped ``heat`` (``(H, W)`` in [0, 1], resized to the
    image if needed): ``(1 - alpha) · image + alpha · colours``."""
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha must be in [0, 1], got {alpha}")
    base = _image(image)
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    if heat.shape != (base.height, base.width):
        resized = Image.fromarray(heat).resize(base.size, Image.Resampling.BILINEAR)
        heat = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    colours = Image.fromarray(_colours(heat, cmap))
    return Image.blend(base, colours, alpha)
