"""Causal text transformer tower with EOT pooling (OpenAI CLIP layout)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..configs import TextConfig
from .intermediates import TokenPass
from .layers import Transformer, check_tokens, embedding_for_init, init_scaled_normal_
from .packing import PACK_ROW, Packing, pack
from .tower import TowerSettings, TransformerTower, register_tower


@register_tower(TextConfig)
class TextTransformer(TransformerTower):
    """Token + positional embeddings, causal transformer, ``ln_final``, EOT pooling, projection.
    (``causal=False`` in the config: the same without the mask, as MobileCLIP's text towers.)

    The pooled feature is taken at the end-of-text token, found as the argmax of the token
    ids (EOT has the largest id in the CLIP vocabulary), exactly as OpenAI's CLIP, or as the
    first occurrence of ``cfg.eot_token_id`` when set (transformers' rule).
    Because attention is causal and only the EOT position is read, positions after the
    longest EOT of the batch cannot influence the result; ``forward`` skips them
    (``trim_padding=True``), which is exact and much faster for short prompts, and packs
    prompts of mixed lengths end to end in shared rows (:mod:`.packing`).
    """

    default_output_fmt = "NLC"

    transformer: Transformer

    head_names = ("ln_final", "text_projection")

    def __init__(self, cfg: TextConfig, settings: TowerSettings) -> None:
        super().__init__()
        embed_dim = settings.embed_dim
        activation, eps = settings.for_tower(cfg.activation, cfg.norm_eps)
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.output_dim = embed_dim
        self.eot_token_id = cfg.eot_token_id
        self.pool_last = cfg.pool_type == "last"
        self.causal = cfg.causal
        self.token_embedding = embedding_for_init(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps, causal=cfg.causal
        )
        self.ln_final = nn.LayerNorm(cfg.width, eps=eps)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_weights()
        init_scaled_normal_(self.text_projection, self.text_projection.shape[0])

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of the pooled (end-of-text, or last: ``pool_type="last"``) token in each row."""
        if self.pool_last:
            return torch.full_like(tokens[:, 0], tokens.shape[1] - 1)
        if self.eot_token_id is None:
            return tokens.argmax(dim=-1)
        return (tokens == self.eot_token_id).int().argmax(dim=-1)

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, context, width)``: every position's feature after ``ln_final`` (no trim)."""
        check_tokens(inputs, self.context_length)
        x = self.token_embedding(inputs)
        x = x + self.positional_embedding[: inputs.shape[1]].to(x.dtype)
        return self.ln_final(self.transformer(x))

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        """open_clip's text ``forward_intermediates`` over the full (untrimmed) sequence:
        block outputs ``(N, L, width)``; features ``ln_final(x)[eot] @ text_projection``."""
        check_tokens(inputs, self.context_length)
        x = self.token_embedding(inputs)
        x = x + self.positional_embedding[: inputs.shape[1]].to(x.dtype)
        rows = torch.arange(inputs.shape[0], device=inputs.device)
        eot = self.eot_positions(inputs)
        return TokenPass(
            self.transformer.steps(),
            x,
            kind="text",
            norm=self.ln_final,
            pool=lambda y: self.ln_final(y[rows, eot]) @ self.text_projection,
        )

    def export_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The untrimmed forward (the length axis stays dynamic; a runtime trims itself)."""
        return self(inputs, trim_padding=False)

    def input_spec(self) -> dict[str, Any]:
        """EOT pooling: argmax of the ids, or the first ``eot_token_id`` when set; without
        the causal mask (``eot_full``) the runtime must not trim the padding; ``last``."""
        if self.pool_last:
            return {"pooling": "last"}
        pooling = "eot" if self.causal else "eot_full"
        return {"pooling": pooling, "eot_token_id": self.eot_token_id}

    def forward(self, tokens: torch.Tensor, trim_padding: bool = True) -> torch.Tensor:
        check_tokens(tokens, self.context_length)
        eot = self.eot_positions(tokens)
        # the trim's data-dependent length would split a torch.compile graph: skip it there
        trim = trim_padding and self.causal  # without the mask, padding changes the result
        if trim and tokens.shape[0] > 0 and not torch.compiler.is_compiling():
            row = max(self.context_length, PACK_ROW)
            packing = pack(tokens, eot, row) if tokens.shape[0] > 1 else None
            if packing is not None:
                return self._forward_packed(packing)
            tokens = tokens[:, : int(eot.max()) + 1]
        x = self.token_embedding(tokens)
        x = x + self.positional_embedding[: tokens.shape[1]].to(x.dtype)
        pooled = self.transformer(x, pool_index=eot)  # LayerNorm is per token: pool first
        return self.ln_final(pooled) @ self.text_projection

    def _forward_packed(self, packing: Packing) -> torch.Tensor:
        """The forward over prompts packed end to end (see :mod:`.packing`): the same
        features, computed on the real tokens only."""
        x = self.token_embedding(packing.tokens)
        x = x + self.positional_embedding[packing.positions].to(x.dtype)
        pooled = self.transformer(
            x, pool_index=packing.pool_col, attn_mask=packing.mask, pool_rows=packing.pool_row
        )
        return self.ln_final(pooled) @ self.text_projection
