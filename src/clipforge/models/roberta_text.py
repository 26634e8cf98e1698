"""RoBERTa / XLM-RoBERTa text tower (open_clip's ``xlm-roberta-*`` and ``roberta-*`` models),
native: transformers' ``XLMRobertaModel`` forward without transformers.

Word + learned position (counted from ``pad_token_id + 1`` over non-padding tokens, as
fairseq and transformers do) + token-type embeddings, LayerNorm (``ln_pre``), post-LN blocks
``ln_1(x + attn(x))``, ``ln_2(x + mlp(x))``; then open_clip's pooler and projection.
"""

from __future__ import annotations

import torch
from torch import nn

from ..configs.hf_text import RobertaTextConfig
from .hf_text_common import BlockStack, FeedForward, HFTextTower, MaskedSelfAttention
from .tower import TowerSettings, register_tower


class PostNormBlock(nn.Module):
    """BERT's block: ``x = ln_1(x + attn(x))``, ``x = ln_2(x + mlp(x))``."""

    def __init__(self, cfg: RobertaTextConfig) -> None:
        super().__init__()
        w = cfg.width
        self.attn = MaskedSelfAttention(w, cfg.heads)
        self.ln_1 = nn.LayerNorm(w, eps=cfg.norm_eps)
        self.mlp = FeedForward(w, cfg.intermediate_size, cfg.activation)
        self.ln_2 = nn.LayerNorm(w, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(x + self.attn(x, mask))
        return self.ln_2(x + self.mlp(x))


@register_tower(RobertaTextConfig)
class RobertaTextTower(HFTextTower):
    """XLM-R / RoBERTa encoder, pooled (mean over tokens, or the first token through the tanh
    ``pooler``) and projected as open_clip's ``HFTextEncoder`` does."""

    def __init__(self, cfg: RobertaTextConfig, settings: TowerSettings) -> None:
        super().__init__()
        w = cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.max_positions, w))
        self.token_type_embedding = nn.Parameter(torch.empty(cfg.type_vocab_size, w))
        self.ln_pre = nn.LayerNorm(w, eps=cfg.norm_eps)
        self.transformer = BlockStack([PostNormBlock(cfg) for _ in range(cfg.layers)])
        self.pooler = nn.Linear(w, w) if cfg.pooler == "cls" else None
        self._init_head(cfg, settings.embed_dim)
        self.init_weights()

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = self._positions(tokens, self.positional_embedding.shape[0])
        x = self.token_embedding(tokens) + self.positional_embedding[positions]
        return self.ln_pre(x + self.token_type_embedding[0])
