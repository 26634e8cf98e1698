"""M2M100 / NLLB-200 encoder text tower (open_clip's ``nllb-clip-*`` models), native:
transformers' ``M2M100Encoder`` forward without transformers.

Token embeddings scaled by ``sqrt(width)``, fairseq's sinusoidal positions (counted from
``pad_token_id + 1`` over non-padding tokens; a fixed table, not a parameter), pre-LN blocks
``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))`` with a ReLU MLP, a final LayerNorm; then open_clip's
pooler (NLLB-CLIP: the first token, the language code) and linear projection.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..configs.hf_text import M2M100TextConfig
from .hf_text_common import (
    BlockStack,
    FeedForward,
    HFTextTower,
    MaskedSelfAttention,
    PreNormBlock,
)
from .tower import TowerSettings, register_tower

#: fairseq's offset of the sinusoidal table (positions start after the padding index)
POSITION_OFFSET = 2


def sinusoidal_table(positions: int, width: int, pad_token_id: int) -> torch.Tensor:
    """fairseq / tensor2tensor sinusoids ``(positions, width)``: sines then cosines, the
    padding row zero."""
    half = width // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.int64).float() * -step)
    angles = torch.arange(positions, dtype=torch.int64).float().unsqueeze(1) * freqs.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).view(positions, -1)
    if width % 2:
        table = torch.cat([table, torch.zeros(positions, 1)], dim=1)
    table[pad_token_id, :] = 0
    return table


def m2m100_layer(cfg: M2M100TextConfig) -> PreNormBlock:
    """One encoder layer: LayerNorms, biased attention, a two-layer MLP."""
    w = cfg.width
    return PreNormBlock(
        nn.LayerNorm(w, eps=cfg.norm_eps), MaskedSelfAttention(w, cfg.heads),
        nn.LayerNorm(w, eps=cfg.norm_eps), FeedForward(w, cfg.intermediate_size, cfg.activation),
    )  # fmt: skip


@register_tower(M2M100TextConfig)
class M2M100TextTower(HFTextTower):
    """The M2M100 encoder, pooled and projected as open_clip's ``HFTextEncoder`` does."""

    def __init__(self, cfg: M2M100TextConfig, settings: TowerSettings) -> None:
        super().__init__()
        w = cfg.width
        self.embed_scale = math.sqrt(w) if cfg.scale_embedding else 1.0
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        table = sinusoidal_table(cfg.max_positions + POSITION_OFFSET, w, cfg.pad_token_id)
        self.register_buffer("position_table", table, persistent=False)
        self.position_table: torch.Tensor
        self.transformer = BlockStack([m2m100_layer(cfg) for _ in range(cfg.layers)])
        self.ln_final = nn.LayerNorm(w, eps=cfg.norm_eps)
        self._init_head(cfg, settings.embed_dim)
        self.init_weights()

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = self._positions(tokens, self.position_table.shape[0])
        x = self.token_embedding(tokens) * self.embed_scale
        return x + self.position_table[positions].to(x.dtype)
