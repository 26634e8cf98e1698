"""SigLIP 2 NaFlex preprocessing: aspect-preserving resize under a patch budget, patchify, pad.

Reproduces transformers' PIL ``Siglip2ImageProcessor`` (``Siglip2ImageProcessorPil`` in 5.x)
bit for bit: RGB conversion, :func:`naflex_size` (the largest patch grid within
``max_num_patches`` at the image's aspect ratio, by the same binary search), a PIL resize,
``* (1/255)`` in float64 then float32 normalisation, patches flattened as
``(row, col, channel)`` and zero-padded to ``max_num_patches`` with a mask.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from ..configs.preprocess import PreprocessConfig
from .image_io import ImageDecodeError, PathLike, load_image, to_8bit
from .transforms import _RESAMPLE, BuiltFromConfig, _hf_to_rgb, _Normalizer

if TYPE_CHECKING:
    import torch


class NaFlexPatches(NamedTuple):
    """A NaFlex input: ``patches`` ``(N, L, patch² · 3)`` (float), ``mask`` ``(N, L)``
    (True for real patches, False for padding) and ``spatial_shapes`` ``(N, 2)`` (each
    image's patch rows and columns). One image (from the preprocessing) has no ``N``;
    ``torch.utils.data.default_collate`` stacks samples into a batch."""

    patches: torch.Tensor
    mask: torch.Tensor
    spatial_shapes: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.patches.device

    def to(
        self,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        non_blocking: bool = False,
    ) -> NaFlexPatches:
        """Move to ``device``; ``dtype`` applies to the patches only."""
        return NaFlexPatches(
            self.patches.to(device=device, dtype=dtype, non_blocking=non_blocking),
            self.mask.to(device=device, non_blocking=non_blocking),
            self.spatial_shapes.to(device=device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:  # type: ignore[override]  # images, not fields
        return 1 if self.mask.ndim == 1 else int(self.mask.shape[0])


def naflex_size(height: int, width: int, patch_size: int, max_num_patches: int) -> tuple[int, int]:
    """``(height, width)`` in pixels: multiples of ``patch_size``, at least one patch each,
    at most ``max_num_patches`` patches, found by transformers' binary search on the scale."""

    def scaled(scale: float, size: int) -> int:
        return int(max(patch_size, math.ceil(size * scale / patch_size) * patch_size))

    eps = 1e-5
    lo, hi = eps / 10, 100.0
    while hi - lo >= eps:
        scale = (lo + hi) / 2
        patches = (scaled(scale, height) / patch_size) * (scaled(scale, width) / patch_size)
        if patches <= max_num_patches:
            lo = scale
        else:
            hi = scale
    return scaled(lo, height), scaled(lo, width)


def patchify(pixels: np.ndarray, patch_size: int) -> np.ndarray:
    """``(3, H, W)`` → ``(H/p · W/p, p · p · 3)``, patches in row-major order."""
    channels, height, width = pixels.shape
    rows, cols = height // patch_size, width // patch_size
    grid = pixels.reshape(channels, rows, patch_size, cols, patch_size)
    return grid.transpose(1, 3, 2, 4, 0).reshape(rows * cols, -1)


class NaFlexPreprocess(BuiltFromConfig):
    """Picklable callable: PIL image or path → :class:`NaFlexPatches` of one image."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        if cfg.max_num_patches is None or cfg.patch_size is None:
            raise ValueError("NaFlexPreprocess needs max_num_patches and patch_size")
        self.cfg = cfg
        self.budget, self.patch_size = cfg.max_num_patches, cfg.patch_size
        self._resample = _RESAMPLE[cfg.interpolation]
        self._normalize = _Normalizer(cfg.mean, cfg.std, "hf")

    def __call__(self, image: Image.Image | PathLike) -> NaFlexPatches:
        import torch  # the ONNX runtime path preprocesses with numpy alone

        patches, mask, shape = self.to_arrays(image)
        return NaFlexPatches(torch.from_numpy(patches), torch.from_numpy(mask), torch.tensor(shape))

    def to_arrays(
        self, image: Image.Image | PathLike
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Patches ``(max_num_patches, p²·3)`` float32, mask (bool), ``(rows, cols)``."""
        path = image if isinstance(image, str | os.PathLike) else None
        if path is not None:
            image = load_image(path)
        elif not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image or a path, got {type(image).__name__}")
        if min(image.size) < 1:
            message = f"image has no pixels ({image.size[0]}x{image.size[1]})"
            raise ImageDecodeError(path, message) if path is not None else ValueError(message)
        image = _hf_to_rgb(to_8bit(image))
        height, width = naflex_size(image.height, image.width, self.patch_size, self.budget)
        if (width, height) != image.size:
            image = image.resize((width, height), self._resample)
        flat = patchify(self._normalize(image), self.patch_size)
        patches = np.zeros((self.budget, flat.shape[1]), dtype=np.float32)
        patches[: len(flat)] = flat
        mask = np.zeros(self.budget, dtype=bool)
        mask[: len(flat)] = True
        return patches, mask, (height // self.patch_size, width // self.patch_size)

    def batch(self, images: Sequence[Image.Image | PathLike]) -> NaFlexPatches:
        """Several images as one :class:`NaFlexPatches` batch."""
        from torch.utils.data import default_collate

        return default_collate([self(image) for image in images])
