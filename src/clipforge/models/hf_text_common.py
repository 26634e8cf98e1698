"""What the native HF text towers share (RoBERTa / XLM-R, mT5, M2M100 / NLLB): padding-masked
self-attention, feed-forward blocks, open_clip's poolers and projections, and the tower
skeleton (embedding → masked blocks → final norm → pool → project) with
``forward_intermediates``.

Written on clipforge's conventions so LoRA, LiT and checkpointing apply as to every tower:
blocks are ``transformer.resblocks.*`` with a fused ``attn.in_proj_weight`` and
``attn.out_proj``, ``mlp.c_fc`` / ``mlp.c_proj``. Padding is masked as transformers masks
it (``attention_mask = tokens != pad_token_id``), so a sequence's features do not depend on
how much padding follows it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .intermediates import TokenPass
from .layers import BlockStack, GELUTanh, check_tokens
from .tower import TransformerTower

#: HF ``hidden_act`` names → activation modules (exact GELU, tanh GELU = ``gelu_new``, ReLU)
HF_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": GELUTanh,
    "relu": nn.ReLU,
}


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``in_proj_weight`` (query, key, value rows) and
    an additive or boolean attention mask; ``inner`` is the heads' total width (T5's
    ``heads * d_kv``), ``scale`` the score scale (``None``: ``head_dim ** -0.5``; T5: 1)."""

    def __init__(
        self, width: int, heads: int, inner: int | None = None, bias: bool = True,
        scale: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        inner = inner or width
        self.heads, self.inner, self.scale = heads, inner, scale
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner)) if bias else None
        self.out_proj = nn.Linear(inner, width, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, length, 3, self.heads, self.inner // self.heads).permute(
            2, 0, 3, 1, 4
        )
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=mask, scale=self.scale
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.inner))


class FeedForward(nn.Module):
    """``c_proj(act(c_fc(x)))``, or gated (T5 v1.1 / mT5): ``c_fc`` stacks the gate rows
    above the value rows and computes ``c_proj(act(gate) * value)``."""

    def __init__(
        self, width: int, hidden: int, activation: str, bias: bool = True, gated: bool = False
    ) -> None:
        super().__init__()
        self.gated = gated
        self.c_fc = nn.Linear(width, 2 * hidden if gated else hidden, bias=bias)
        self.act = HF_ACTIVATIONS[activation]()
        self.c_proj = nn.Linear(hidden, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)
        if self.gated:
            gate, value = x.chunk(2, dim=-1)
            return self.c_proj(self.act(gate) * value)
        return self.c_proj(self.act(x))


class PreNormBlock(nn.Module):
    """``x + attn(ln_1(x), mask)``, ``x + mlp(ln_2(x))``: the pre-norm encoder layer of
    M2M100 (LayerNorm) and T5 (RMS norm; ``mask`` carries the position bias too)."""

    def __init__(self, ln_1: nn.Module, attn: MaskedSelfAttention, ln_2: nn.Module,
                 mlp: FeedForward) -> None:  # fmt: skip
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = ln_1, attn, ln_2, mlp

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


def build_projection(width: int, proj: str, embed_dim: int) -> nn.Module:
    """open_clip's ``HFTextEncoder.proj``: bias-free ``mlp`` (Linear, GELU, Linear through
    ``(width + embed_dim) // 2``), ``linear`` or ``none`` (identity; width must equal
    ``embed_dim``)."""
    if proj == "mlp":
        hidden = (width + embed_dim) // 2
        return nn.Sequential(
            nn.Linear(width, hidden, bias=False),
            nn.GELU(),
            nn.Linear(hidden, embed_dim, bias=False),
        )
    if proj == "linear":
        return nn.Linear(width, embed_dim, bias=False)
    if width != embed_dim:
        raise ValueError(
            f"text width {width} differs from embed_dim {embed_dim}: text.proj must be set"
        )
    return nn.Identity()


def padding_mask(tokens: torch.Tensor, pad_token_id: int, dtype: torch.dtype) -> torch.Tensor:
    """``(N, 1, 1, L)`` additive mask: 0 for tokens, the dtype's minimum for padding keys
    (transformers' extended attention mask)."""
    keep = (tokens != pad_token_id)[:, None, None, :]
    return torch.zeros(keep.shape, dtype=dtype, device=tokens.device).masked_fill(
        ~keep, torch.finfo(dtype).min
    )


def roberta_positions(tokens: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """fairseq's position ids: ``pad + 1, pad + 2, ...`` over tokens, ``pad`` on padding."""
    keep = tokens.ne(pad_token_id).int()
    return (torch.cumsum(keep, dim=1).type_as(keep) * keep).long() + pad_token_id


class HFTextTower(TransformerTower):
    """The skeleton of an HF text tower. Subclasses build ``transformer`` (a
    :class:`BlockStack`), ``proj`` and optionally ``ln_final`` / ``pooler``, and implement
    :meth:`_embed` and :meth:`_mask`; ``pad_token_id``, ``pooler_type``, ``context_length``
    and ``vocab_size`` are set from the config."""

    transformer: BlockStack
    head_names = ("ln_final", "pooler", "proj")
    default_output_fmt = "NLC"
    pad_token_id: int
    pooler_type: str
    context_length: int
    vocab_size: int

    def _init_head(self, cfg: Any, embed_dim: int) -> None:
        self.pad_token_id, self.pooler_type = cfg.pad_token_id, cfg.pooler
        self.context_length, self.vocab_size = cfg.context_length, cfg.vocab_size
        self.output_dim = embed_dim
        self.token_dim = cfg.width
        self.proj = build_projection(cfg.width, cfg.proj, embed_dim)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` ids → ``(N, L, width)`` block inputs."""
        raise NotImplementedError

    def _mask(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What every block gets beside ``x``: the padding mask (plus position bias)."""
        return padding_mask(tokens, self.pad_token_id, x.dtype)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        ln_final = getattr(self, "ln_final", None)
        return ln_final(x) if ln_final is not None else x

    def _positions(self, tokens: torch.Tensor, table_rows: int) -> torch.Tensor:
        """fairseq's position ids (:func:`roberta_positions`); ``ValueError`` when they run
        past a position table of ``table_rows`` rows."""
        positions = roberta_positions(tokens, self.pad_token_id)
        if int(positions.max()) >= table_rows:
            raise ValueError(
                f"token sequences of length {tokens.shape[1]} exceed the model's "
                f"{table_rows - self.pad_token_id - 1} positions"
            )
        return positions

    def init_weights(self) -> None:
        """BERT's / fairseq's initialisation: normal(0.02) matrices and embeddings, zero
        biases, unit norms (T5 overrides it)."""
        for name, param in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(param)
            elif "ln_" in name:
                nn.init.ones_(param)
            else:
                nn.init.normal_(param, std=0.02)

    def _pool(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's pooler over the final ``(N, L, width)`` states, then the projection."""
        if self.pooler_type == "mean":
            keep = (tokens != self.pad_token_id).long()
            pooled = (x * keep.unsqueeze(-1)).sum(dim=1) / keep.sum(-1, keepdim=True)
        else:
            pooled = x[:, 0]
            pooler = getattr(self, "pooler", None)
            if self.pooler_type == "cls" and pooler is not None:  # RoBERTa's tanh pooler
                pooled = torch.tanh(pooler(pooled))
        return self.proj(pooled)

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, L, width)``: every token's final hidden state (transformers'
        ``last_hidden_state``)."""
        check_tokens(inputs)
        x = self._embed(inputs)
        mask = self._mask(inputs, x)
        for block in self.blocks:
            x = self.transformer.run(block, x, mask)
        return self._final(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._pool(self.forward_features(tokens), tokens)

    def forward_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, last hidden states)``: open_clip's ``output_tokens`` (a CoCa decoder's
        input; the first token is left out under the ``cls`` pooler, as open_clip does)."""
        x = self.forward_features(tokens)
        return self._pool(x, tokens), x[:, 1:] if self.pooler_type == "cls" else x

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        """Block outputs ``(N, L, width)`` (transformers' per-layer hidden states before any
        final norm) and the pooled, projected features of the same pass."""
        check_tokens(inputs)
        x = self._embed(inputs)
        mask = self._mask(inputs, x)
        return TokenPass(
            self.transformer.steps(mask), x, kind="text", norm=self._final,
            pool=lambda y: self._pool(self._final(y), inputs),
        )  # fmt: skip

    def input_spec(self) -> dict[str, Any]:
        """Padding is masked, not trimmed: feed the full padded context."""
        return {"pooling": self.pooler_type, "pad_token_id": self.pad_token_id}
