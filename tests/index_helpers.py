"""Helpers shared by the index and serve tests: small generated images, tiny-model indexes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    """A random RGB PNG/JPEG (by suffix), distinct per seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_images(folder: Path, n: int, start: int = 0) -> list[Path]:
    return [write_image(folder / f"img{i:03d}.png", seed=i) for i in range(start, start + n)]


def brute_force(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k with numpy (vectors are unit length)."""
    scores = queries @ vectors.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, axis=1), ids[top]
