"""Perception Encoder (PE-Core) image tower, native: a ViT with 2-D rotary positions and
attention pooling, equal to timm's ``vit_pe_core_*`` trunk as open_clip builds it.

Written on clipforge's conventions so every generic feature applies: blocks are
``transformer.resblocks.*`` with ``ln_1``/``ln_2``, a fused ``attn.in_proj_weight`` and
``attn.out_proj``, ``mlp.c_fc``/``mlp.c_proj`` (LoRA's targets), attention runs through
SDPA, and the attention pool is SigLIP's MAP head. The rotary table follows timm's
``RotaryEmbeddingCat`` (``in_pixels=False``, ``grid_indexing='xy'``): per head, ``head_width
/ 4`` inverse frequencies ``10000^(-k / n)`` for each of the column and row coordinates
``(index + rope_offset) / grid * rope_ref_grid``, every angle used for a channel pair.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..configs.pe import PerceptionVisionConfig
from .eva import Rope, apply_rope
from .layers import BlockStack, Mlp, SelfAttention
from .siglip_vision import AttentionPool
from .tower import PatchTransformerTower, TowerSettings, register_tower


def pe_rope_tables(
    cfg: PerceptionVisionConfig, grid: tuple[int, int], device: torch.device | None = None
) -> Rope:
    """PE's 2-D rotary table for a ``(rows, cols)`` patch grid: ``(sin, cos)``, each
    ``(rows·cols, head_width)`` (patches in row-major order)."""
    bands = cfg.head_width // 4
    exponent = torch.arange(bands, device=device, dtype=torch.int64).float() / bands
    inv_freq = 1.0 / (10000.0**exponent)
    rows, cols = grid
    ref = cfg.rope_ref_grid

    def axis(n: int) -> torch.Tensor:
        coords = torch.arange(n, device=device, dtype=torch.int64).float() + cfg.rope_offset
        return coords / n * ref

    ys, xs = torch.meshgrid(axis(rows), axis(cols), indexing="ij")
    mesh = torch.stack((xs, ys), dim=-1)  # x (column) first: timm's 'xy' grid indexing
    angles = (mesh.unsqueeze(-1) * inv_freq).flatten(0, 1).flatten(1)
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.sin(), angles.cos()


class RopeSelfAttention(SelfAttention):
    """Fused-projection self-attention with rotary positions on the non-prefix tokens."""

    def forward(self, x: torch.Tensor, rope: Rope | None = None, prefix: int = 0) -> torch.Tensor:  # type: ignore[override]
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if rope is not None:
            q = torch.cat((q[:, :, :prefix], apply_rope(q[:, :, prefix:], rope)), dim=2)
            k = torch.cat((k[:, :, :prefix], apply_rope(k[:, :, prefix:], rope)), dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class RopeBlock(nn.Module):
    """Pre-LN block ``x + attn(ln_1(x), rope)``, ``x + mlp(ln_2(x))`` (GELU MLP)."""

    def __init__(self, cfg: PerceptionVisionConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = RopeSelfAttention(cfg.width, cfg.heads)
        self.ln_2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_width, "gelu")

    def forward(self, x: torch.Tensor, rope: Rope | None = None, prefix: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, prefix)
        return x + self.mlp(self.ln_2(x))


@register_tower(PerceptionVisionConfig)
class PerceptionVisionTransformer(PatchTransformerTower):
    """Bias-free patch conv, class token (optional), learned + rotary positions, ``ln_pre``,
    rotary blocks, ``ln_post``, attention pool over every token, biased ``proj``."""

    transformer: BlockStack  # of RopeBlock(x, rope, prefix)

    head_names = ("ln_post", "attn_pool", "proj")
    config: PerceptionVisionConfig

    def __init__(self, cfg: PerceptionVisionConfig, settings: TowerSettings) -> None:
        super().__init__()
        self._init_patches(cfg, settings.embed_dim, class_token=cfg.class_token, bias=False)
        w = cfg.width
        self.positional_embedding = nn.Parameter(torch.empty(cfg.grid_size**2 + self.num_prefix, w))
        self.ln_pre = nn.LayerNorm(w, eps=cfg.norm_eps)
        self.transformer = BlockStack(RopeBlock(cfg) for _ in range(cfg.layers))
        self.ln_post = nn.LayerNorm(w, eps=cfg.norm_eps)
        pool_mlp = int(w * cfg.pool_mlp_ratio)
        self.attn_pool = AttentionPool(w, cfg.pool_heads, pool_mlp, "gelu", cfg.norm_eps)
        self.proj = nn.Linear(w, settings.embed_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """timm's EVA init: truncated normal (std 0.02) matrices and embeddings, zero biases,
        depth-scaled residual outputs."""
        for name, param in self.named_parameters():
            if param.ndim >= 2 or name == "class_embedding":
                nn.init.trunc_normal_(param, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        for i, block in enumerate(cast(list[RopeBlock], list(self.blocks))):
            block.attn.out_proj.weight.data.div_((2.0 * (i + 1)) ** 0.5)
            block.mlp.c_proj.weight.data.div_((2.0 * (i + 1)) ** 0.5)

    def no_weight_decay(self) -> set[str]:
        """The default rule plus the position and class embeddings and the pool's query."""
        extra = {"positional_embedding", "attn_pool.latent"}
        return (
            super().no_weight_decay() | extra | ({"class_embedding"} if self.num_prefix else set())
        )

    def _tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        """Normed tokens (class token first, if any) with positions, and the rotary table."""
        grid = (self.config.grid_size, self.config.grid_size)  # static: traceable (ONNX)
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)  # (N, grid², width)
        if self.class_embedding is not None:
            cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
        x = self.ln_pre(x + self.positional_embedding.to(x.dtype))
        sin, cos = pe_rope_tables(self.config, grid, x.device)
        return x, (sin[None, None], cos[None, None])

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attn_pool(self.ln_post(x)))

    def _block_inputs(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[Rope, int]]:
        x, rope = self._tokens(pixels)
        return x, (rope, self.num_prefix)
