"""SigLIP text tower: a bidirectional transformer pooled at the last position."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..configs import SigLipTextConfig
from .intermediates import TokenPass
from .layers import Transformer, check_tokens, embedding_for_init
from .tower import TowerSettings, TransformerTower, register_tower


@register_tower(SigLipTextConfig)
class SigLipTextTransformer(TransformerTower):
    """Token + positional embeddings, unmasked transformer, ``ln_final``, last-token pooling,
    biased linear ``text_projection``.

    Attention is bidirectional, so padding changes every position: token ids must be padded
    to ``context_length`` exactly as the checkpoint was trained (no trimming here). Only the
    last position is pooled, so the last block computes just that row.
    """

    default_output_fmt = "NLC"

    transformer: Transformer

    head_names = ("ln_final", "text_projection")

    def __init__(self, cfg: SigLipTextConfig, settings: TowerSettings) -> None:
        super().__init__()
        activation, eps = cfg.activation or settings.activation, settings.norm_eps
        if cfg.proj == "none" and cfg.width != settings.embed_dim:
            raise ValueError(
                f"SigLIP text width {cfg.width} differs from embed_dim {settings.embed_dim}: "
                "text.proj must be 'linear'"
            )
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.output_dim = settings.embed_dim
        self.token_embedding = embedding_for_init(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps, causal=False
        )
        self.ln_final = nn.LayerNorm(cfg.width, eps=eps)
        self.text_projection = (
            nn.Linear(cfg.width, settings.embed_dim) if cfg.proj == "linear" else None
        )
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_weights()
        if self.text_projection is not None:
            nn.init.normal_(self.text_projection.weight, std=self.transformer.width**-0.5)
            nn.init.zeros_(self.text_projection.bias)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.context_length)
        x = self.token_embedding(tokens)
        return x + self.positional_embedding[: tokens.shape[1]].to(x.dtype)

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, length, width)``: every position's feature after ``ln_final``."""
        return self.ln_final(self.transformer(self._embed(inputs)))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.ln_final(x[:, -1])
        return self.text_projection(pooled) if self.text_projection is not None else pooled

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        """open_clip's text ``forward_intermediates`` (bidirectional, last-token pooling):
        block outputs ``(N, L, width)``; features from the last position of the same pass."""
        return TokenPass(
            self.transformer.steps(),
            self._embed(inputs),
            kind="text",
            norm=self.ln_final,
            pool=self._pool,
        )

    def input_spec(self) -> dict[str, Any]:
        """Last-position pooling over bidirectional attention: pad to the context, never trim."""
        return {"pooling": "last"}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self._embed(tokens)
        last = torch.full((x.shape[0],), x.shape[1] - 1, dtype=torch.long, device=x.device)
        pooled = self.ln_final(self.transformer(x, pool_index=last))
        return self.text_projection(pooled) if self.text_projection is not None else pooled
