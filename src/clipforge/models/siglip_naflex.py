"""SigLIP 2 NaFlex image tower: the SigLIP tower over variable-size, padded patch sequences.

Equal to transformers' ``Siglip2VisionModel``: patches embedded by a linear map (the patch
convolution's weights, flattened in ``(row, col, channel)`` order), the learned square
position grid resized to each image's patch grid (bilinear, antialiased, as
``F.interpolate`` computes it) with padding positions taking the first resized position,
padding keys masked out of every attention and out of the MAP head.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from ..configs import SigLipNaFlexVisionConfig
from ..preprocess import NaFlexPatches
from .intermediates import TokenPass
from .siglip_vision import SigLipVisionTransformer
from .tower import TowerSettings, register_tower


def patchify_pixels(pixels: torch.Tensor, patch_size: int) -> NaFlexPatches:
    """``(N, 3, H, W)`` pixels → an unpadded :class:`NaFlexPatches` batch (every patch real;
    a remainder that does not fill a patch is dropped, as the patch convolution does)."""
    batch, channels, height, width = pixels.shape
    rows, cols = height // patch_size, width // patch_size
    grid = pixels[:, :, : rows * patch_size, : cols * patch_size]
    grid = grid.reshape(batch, channels, rows, patch_size, cols, patch_size)
    patches = grid.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, -1)
    mask = torch.ones(batch, rows * cols, dtype=torch.bool, device=pixels.device)
    shapes = torch.tensor([[rows, cols]], device=pixels.device).expand(batch, 2)
    return NaFlexPatches(patches, mask, shapes)


def resize_positions(
    table: torch.Tensor, grid: int, shapes: torch.Tensor, length: int
) -> torch.Tensor:
    """``(grid², C)`` learned positions → ``(N, length, C)``: each image's ``(rows, cols)``
    grid by bilinear antialiased interpolation (in float32), the padding positions after
    it filled with its first position (transformers' ``resize_positional_embeddings``)."""
    width = table.shape[-1]
    source = table.float().reshape(grid, grid, width).permute(2, 0, 1).unsqueeze(0)
    out = table.new_empty(shapes.shape[0], length, width, dtype=torch.float32)
    pairs = [tuple(pair) for pair in shapes.tolist()]
    for rows, cols in sorted(set(pairs)):
        resized = F.interpolate(
            source, size=(rows, cols), mode="bilinear", align_corners=False, antialias=True
        )
        resized = resized[0].reshape(width, rows * cols).T
        index = torch.tensor([i for i, p in enumerate(pairs) if p == (rows, cols)])
        out[index, : rows * cols] = resized
        out[index, rows * cols :] = resized[0]
    return out.to(table.dtype)


@register_tower(SigLipNaFlexVisionConfig)
class SigLipNaFlexVisionTransformer(SigLipVisionTransformer):
    """A :class:`SigLipVisionTransformer` (same parameters) whose inputs are
    :class:`NaFlexPatches` batches; plain ``(N, 3, H, W)`` pixels are patchified first."""

    supports_patch_dropout = False
    default_output_fmt = "NLC"  # padded patch sequences: a grid only when every image shares one

    def __init__(self, cfg: SigLipNaFlexVisionConfig, settings: TowerSettings) -> None:
        super().__init__(cfg, settings)
        self.patch_size, self.grid = cfg.patch_size, cfg.grid_size

    def as_patches(self, inputs: torch.Tensor | NaFlexPatches) -> NaFlexPatches:
        """``inputs`` as a batched :class:`NaFlexPatches`."""
        if isinstance(inputs, NaFlexPatches):
            if inputs.mask.ndim == 1:  # one preprocessed image
                return NaFlexPatches(*(t.unsqueeze(0) for t in inputs))
            return inputs
        return patchify_pixels(inputs, self.patch_size)

    def _embed(self, inputs: torch.Tensor | NaFlexPatches) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``(N, L, width)`` and the key mask ``(N, 1, 1, L)`` (True = real patch)."""
        batch = self.as_patches(inputs)
        conv = self.patch_embed.weight
        weight = conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1)
        x = F.linear(batch.patches.to(weight.dtype), weight, self.patch_embed.bias)
        positions = resize_positions(
            self.positional_embedding, self.grid, batch.spatial_shapes, x.shape[1]
        )
        return x + positions.to(x.dtype), batch.mask.bool()[:, None, None, :]

    def forward_features(self, inputs: torch.Tensor | NaFlexPatches) -> torch.Tensor:  # type: ignore[override]
        """``(N, L, width)``: every token (padding included) after ``ln_post``."""
        x, mask = self._embed(inputs)
        return self.ln_post(self.transformer(x, attn_mask=mask))

    def forward(self, inputs: torch.Tensor | NaFlexPatches) -> torch.Tensor:  # type: ignore[override]
        x, mask = self._embed(inputs)
        return self._pool(self.transformer(x, attn_mask=mask), mask)

    def token_pass(self, inputs: torch.Tensor | NaFlexPatches) -> TokenPass:  # type: ignore[override]
        """Per-block tokens ``(N, L, width)`` (padding positions included; ``"NCHW"`` only
        when every image of the batch has the same patch grid) and the pooled features."""
        batch = self.as_patches(inputs)
        x, mask = self._embed(batch)
        shapes = {tuple(s) for s in batch.spatial_shapes.tolist()}
        rows, cols = next(iter(shapes))
        uniform = len(shapes) == 1 and rows * cols == x.shape[1]
        return TokenPass(
            [partial(self.transformer.run, partial(b, attn_mask=mask)) for b in self.blocks],
            x,
            kind="image",
            norm=self.ln_post,
            pool=partial(self._pool, key_mask=mask),
            grid=(rows, cols) if uniform else None,
        )
