"""The parts of a ViT image tower that dense methods need: tokens up to the last block,
the last block itself, and the head that maps a token into the joint embedding space.

Everything reuses the tower's own submodules (patch conv, positions, pre-norm, blocks,
final norm, projection); nothing is re-implemented. :func:`last_block_input` is the one place
that runs the tower's blocks, so it can later be switched to ``forward_intermediates``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.layers import ResidualAttentionBlock
from ..models.protocols import ClipModel
from ..models.siglip_vision import SigLipVisionTransformer
from ..models.vit import VisionTransformer

SUPPORTED_TOWERS: tuple[str, ...] = ("VisionTransformer (CLIP ViT)", "SigLipVisionTransformer")


@dataclass
class ViTParts:
    """A supported image tower seen as ``embed → blocks[:-1] → last block → head``.

    ``prefix``: tokens before the patches (1 for CLIP's class token, 0 for SigLIP);
    ``grid``: patches per side.
    """

    tower: VisionTransformer | SigLipVisionTransformer
    prefix: int
    grid: int

    @property
    def last_block(self) -> ResidualAttentionBlock:
        # ModuleList indexing is typed as nn.Module; the blocks are ResidualAttentionBlocks
        return cast(ResidualAttentionBlock, self.tower.transformer.resblocks[-1])

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` → tokens entering the first block ``(N, prefix + grid², width)``
        (no patch dropout, whatever the tower's mode)."""
        t = self.tower
        if isinstance(t, VisionTransformer):
            x = t.conv1(pixels).flatten(2).transpose(1, 2)
            cls = t.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1) + t.positional_embedding.to(x.dtype)
            return t.ln_pre(x)
        x = t.patch_embed(pixels).flatten(2).transpose(1, 2)
        return x + t.positional_embedding.to(x.dtype)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token map into the joint space: final norm then projection (CLIP ViT).

        SigLIP has no per-token projection; its tokens go through the MAP head's value path
        (``kv_proj``'s value half → ``out_proj`` → the head's MLP residual) and ``proj``,
        the attention-pool analogue of MaskCLIP's treatment of ResNet's pooling.
        """
        t = self.tower
        x = t.ln_post(tokens)
        if isinstance(t, VisionTransformer):
            return x @ t.proj
        pool = t.attn_pool
        width = x.shape[-1]
        w_v, b_v = pool.kv_proj.weight[width:], pool.kv_proj.bias[width:]
        y = pool.out_proj(F.linear(x, w_v, b_v))
        y = y + pool.mlp(pool.ln(y))
        return t.proj(y) if t.proj is not None else y

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tower's own pooled embedding from the last block's output tokens."""
        t = self.tower
        if isinstance(t, VisionTransformer):
            return t.ln_post(tokens[:, 0]) @ t.proj
        pooled = t.attn_pool(t.ln_post(tokens))
        return t.proj(pooled) if t.proj is not None else pooled


def vit_parts(model: nn.Module) -> ViTParts:
    """The dense-method view of ``model``'s image tower; ``ConfigError`` for other towers."""
    # a model with towers (the runtime-checkable ClipModel protocol) or a bare tower
    tower = model.tower("image") if isinstance(model, ClipModel) else model
    if isinstance(tower, VisionTransformer):
        prefix = 1
    elif isinstance(tower, SigLipVisionTransformer):
        prefix = 0
    else:
        raise ConfigError(
            f"heat maps do not support the {type(tower).__name__} image tower; "
            f"supported: {', '.join(SUPPORTED_TOWERS)}"
        )
    length = tower.positional_embedding.shape[0] - prefix
    return ViTParts(tower, prefix, round(length**0.5))


def last_block_input(parts: ViTParts, pixels: torch.Tensor) -> torch.Tensor:
    """Tokens entering the tower's last block ``(N, prefix + grid², width)``."""
    x = parts.embed(pixels)
    # ModuleList slicing is typed as a ModuleList of nn.Module; the blocks are ResidualAttentionBlocks
    blocks = cast(list[ResidualAttentionBlock], parts.tower.transformer.resblocks[:-1])
    for block in blocks:
        x = block(x)
    return x


def patch_tokens(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Projected patch tokens ``(N, grid², embed_dim)``: the last block's output through
    the final norm and projection, class token dropped (the "plain" dense method)."""
    parts = vit_parts(model)
    x = parts.last_block(last_block_input(parts, pixels))
    return parts.head(x[:, parts.prefix :])
