"""Heat maps as files and PNG bytes: what ``clipforge explain`` and the service's
``/explain/{id}`` hand out."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .heatmap import DEFAULT_METHOD, _image, heatmap, overlay


def _peak(heat: np.ndarray) -> list[int]:
    """``[x, y]`` pixel of the map's maximum."""
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return [int(x), int(y)]


def explain_to_files(
    model: torch.nn.Module,
    image: Image.Image | str | Path,
    texts: Sequence[str],
    outputs: Sequence[str | Path],
    method: str = DEFAULT_METHOD,
    alpha: float = 0.5,
) -> list[dict]:
    """Write one overlay PNG per text (``outputs[i]`` for ``texts[i]``); per text, a dict
    with ``text``, ``overlay`` (path), ``peak`` (``[x, y]``) and ``max_score`` (the highest
    patch score: a cosine, or Grad-CAM saliency)."""
    if len(outputs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(outputs)} output paths")
    pil = _image(image)
    result = heatmap(model, pil, texts, method=method)
    rows = []
    for text, heat, grid, out in zip(texts, result.maps, result.grid, outputs, strict=True):
        overlay(pil, heat, alpha=alpha).save(out, format="PNG")
        rows.append({"text": text, "overlay": str(out), "peak": _peak(heat),
                     "max_score": float(grid.max())})  # fmt: skip
    return rows


def explain_png(
    model: torch.nn.Module,
    image: Image.Image,
    text: str,
    method: str = DEFAULT_METHOD,
    alpha: float = 0.5,
) -> bytes:
    """The overlay of ``text``'s heat map on ``image`` as PNG bytes."""
    result = heatmap(model, image, [text], method=method)
    out = io.BytesIO()
    overlay(image, result.maps[0], alpha=alpha).save(out, format="PNG")
    return out.getvalue()
