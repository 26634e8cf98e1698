"""mT5 / T5 encoder text tower (open_clip's ``mt5-*`` models), native: transformers'
``T5Stack`` encoder forward without transformers.

Unscaled token embeddings, no absolute positions: one table of bidirectional relative
position buckets (``relative_attention_bias``, shared by every block) is added to the
attention scores, which are not scaled by ``head_dim ** -0.5`` (T5 folds that into its
initialisation). Pre-norm blocks with RMS norms (no mean, no bias; the variance in float32),
bias-free projections and the gated-GELU feed-forward of T5 v1.1 / mT5; a final RMS norm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..configs.hf_text import T5TextConfig
from .hf_text_common import (
    BlockStack,
    FeedForward,
    HFTextTower,
    MaskedSelfAttention,
    PreNormBlock,
    padding_mask,
)
from .layers import embedding_for_init
from .tower import TowerSettings, register_tower


class RMSNorm(nn.Module):
    """T5's LayerNorm: ``weight * x / sqrt(mean(x²) + eps)``, the mean square in float32."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


def relative_buckets(length: int, buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """T5's bidirectional bucket of ``key - query`` for every pair ``(length, length)``: half
    the buckets per direction, exact up to a quarter of them, then logarithmic up to
    ``max_distance``."""
    positions = torch.arange(length, dtype=torch.long, device=device)
    relative = positions[None, :] - positions[:, None]
    half = buckets // 2
    out = (relative > 0).to(torch.long) * half
    relative = torch.abs(relative)
    exact = half // 2
    large = exact + (
        torch.log(relative.float() / exact) / math.log(max_distance / exact) * (half - exact)
    ).to(torch.long)
    large = torch.min(large, torch.full_like(large, half - 1))
    return out + torch.where(relative < exact, relative, large)


def t5_layer(cfg: T5TextConfig) -> PreNormBlock:
    """One encoder layer: RMS norms, bias-free unscaled attention ``heads x head_dim``
    wide, the (gated) bias-free feed-forward."""
    w, inner = cfg.width, cfg.heads * cfg.head_dim
    return PreNormBlock(
        RMSNorm(w, cfg.norm_eps),
        MaskedSelfAttention(w, cfg.heads, inner=inner, bias=False, scale=1.0),
        RMSNorm(w, cfg.norm_eps),
        FeedForward(w, cfg.intermediate_size, cfg.activation, bias=False, gated=cfg.gated),
    )


@register_tower(T5TextConfig)
class T5TextTower(HFTextTower):
    """The (m)T5 encoder, pooled and projected as open_clip's ``HFTextEncoder`` does."""

    def __init__(self, cfg: T5TextConfig, settings: TowerSettings) -> None:
        super().__init__()
        w = cfg.width
        self.buckets, self.max_distance = cfg.relative_buckets, cfg.relative_max_distance
        self.token_embedding = embedding_for_init(cfg.vocab_size, w)
        self.relative_attention_bias = embedding_for_init(cfg.relative_buckets, cfg.heads)
        self.transformer = BlockStack([t5_layer(cfg) for _ in range(cfg.layers)])
        self.ln_final = RMSNorm(w, cfg.norm_eps)
        self.config = cfg
        self._init_head(cfg, settings.embed_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """T5's initialisation: projections normal with std ``fan_in ** -0.5`` (queries also
        ``/ sqrt(head_dim)``), embeddings normal(1), unit norms."""
        cfg = self.config
        nn.init.normal_(self.token_embedding.weight, std=1.0)
        nn.init.normal_(self.relative_attention_bias.weight, std=cfg.width**-0.5)
        for block in self.blocks:
            assert isinstance(block, PreNormBlock)
            nn.init.normal_(block.attn.in_proj_weight, std=cfg.width**-0.5)
            with torch.no_grad():
                block.attn.in_proj_weight[: block.attn.inner].mul_(cfg.head_dim**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=block.attn.inner**-0.5)
            nn.init.normal_(block.mlp.c_fc.weight, std=cfg.width**-0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=cfg.intermediate_size**-0.5)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens)

    def _mask(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Relative position bias ``(1, heads, L, L)`` plus the padding mask ``(N, 1, 1, L)``."""
        buckets = relative_buckets(tokens.shape[1], self.buckets, self.max_distance, tokens.device)
        bias = self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0).to(x.dtype)
        return bias + padding_mask(tokens, self.pad_token_id, x.dtype)
