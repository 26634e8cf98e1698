"""Calibration sets: what a quantised model is compared with fp32 on.

The default is small and deterministic: generated images (gradients, shapes, stripes and
noise in many colours, from a fixed seed) and the zero-shot prompts of CIFAR-10's classes
under CLIP's CIFAR templates. ``--calibration DIR`` reads a folder of images instead (and
its ``*.txt`` files, one prompt a line, when it has any).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from ..templates import get_templates

__all__ = ["CIFAR10_CLASSES", "Calibration", "default_calibration", "load_calibration"]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_IMAGES = 64
MAX_TEXTS = 256


@dataclass
class Calibration:
    """Images (paths or PIL images) and prompts, with a one-line description."""

    images: list[Any]
    texts: list[str]
    source: str = "built-in"
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """E.g. ``built-in: 16 images, 40 prompts``."""
        return f"{self.source}: {len(self.images)} images, {len(self.texts)} prompts"


def _generated_image(rng: np.random.Generator, size: int) -> Image.Image:
    """A colour gradient with a few shapes or stripes and some noise."""
    colours = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, size)[None, :, None]
    if rng.random() < 0.5:
        ramp = ramp.transpose(1, 0, 2)
    pixels = colours[0] * (1 - ramp) + colours[1] * ramp + rng.normal(0, 12, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = (int(v) for v in rng.integers(0, size * 3 // 4, 2))
        x1, y1 = x0 + int(rng.integers(size // 8, size // 2)), y0 + int(rng.integers(size // 8, size // 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = (draw.ellipse, draw.rectangle, draw.line)[int(rng.integers(0, 3))]
        if shape is draw.line:
            draw.line((x0, y0, x1, y1), fill=fill, width=int(rng.integers(2, 9)))
        else:
            shape((x0, y0, x1, y1), fill=fill)
    return image


def default_calibration(images: int = 16, size: int = 224, seed: int = 0) -> Calibration:
    """The built-in set: ``images`` generated images and CIFAR-10's zero-shot prompts."""
    rng = np.random.default_rng(seed)
    pictures = [_generated_image(rng, size) for _ in range(images)]
    templates = get_templates("cifar10")[:4]
    texts = [t.replace("{c}", c) for c in CIFAR10_CLASSES for t in templates]
    return Calibration(pictures, texts, "built-in")


def load_calibration(directory: str | os.PathLike) -> Calibration:
    """A folder of images (up to 64, sorted by name) and its ``*.txt`` prompts (else the
    built-in prompts)."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"--calibration {root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    images = [str(p) for p in files if p.suffix.lower() in _SUFFIXES][:MAX_IMAGES]
    if not images:
        raise InputError(f"--calibration {root}: no images ({', '.join(sorted(_SUFFIXES))})")
    texts = [
        line.strip()
        for p in files
        if p.suffix.lower() == ".txt"
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ][:MAX_TEXTS]
    return Calibration(images, texts or default_calibration(0).texts, str(root))
