"""Transformer building blocks shared by the image and text towers.

Parameter names follow OpenAI's CLIP (``attn.in_proj_weight``, ``mlp.c_fc``, ``ln_1``...), the
de-facto standard layout that OpenAI and open_clip checkpoints use, so those load without
renaming. Attention runs through ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the activation OpenAI trained its CLIP models with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class GELUTanh(nn.GELU):
    """GELU with the tanh approximation (big_vision's ``gelu``; SigLIP 2 towers use it)."""

    def __init__(self) -> None:
        super().__init__(approximate="tanh")


ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": GELUTanh,
    "quick_gelu": QuickGELU,
}


def fused_query_kv(
    weight: torch.Tensor, bias: torch.Tensor, query: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fused ``(3·width, width)`` q/k/v projection applied in two parts: the query rows
    ``query`` through its first third, every token of ``x`` through the keys and values."""
    width = x.shape[-1]
    w_q, w_kv = weight.split([width, 2 * width])
    b_q, b_kv = bias.split([width, 2 * width])
    return F.linear(query, w_q, b_q), F.linear(x, w_kv, b_kv)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused input projection (batch-first)."""

    def __init__(self, width: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """The fused q/k/v projection ``(N, L, 3·width)`` (an int8 copy swaps this)."""
        return F.linear(x, self.in_proj_weight, self.in_proj_bias)

    def _project_at(
        self, x: torch.Tensor, rows: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The query at ``x[rows, index]`` ``(N, width)``, every key and value ``(N, L, 2·width)``."""
        return fused_query_kv(self.in_proj_weight, self.in_proj_bias, x[rows, index], x)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``attn_mask``: optional boolean ``(N, 1, 1|L, L)`` (True = attend), e.g. the keys
        that are not padding in a NaFlex batch; given, it replaces the causal mask (a
        causal caller includes causality in it, as packed prompts do)."""
        batch, length, width = x.shape
        qkv = self._project(x)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=attn_mask, is_causal=self.causal and attn_mask is None
        )
        out = out.transpose(1, 2).reshape(batch, length, width)
        return self.out_proj(out)

    def forward_at(
        self,
        x: torch.Tensor,
        index: torch.Tensor,
        rows: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The output at one query position per sequence, ``forward(x, attn_mask)[rows, index]``
        (``rows``: each query's row of ``x``; default one query per row, while packed prompts
        share rows).

        Keys and values still come from the whole row (masked after ``index`` when causal,
        or by ``attn_mask``'s row of that query); only the query, output projection and
        result are computed per query.
        """
        batch, length, width = x.shape
        head_dim = width // self.heads
        gather = rows is not None
        rows = torch.arange(batch, device=x.device) if rows is None else rows
        q, kv = self._project_at(x, rows, index)
        count = q.shape[0]
        q = q.view(count, self.heads, 1, head_dim)
        kv = kv.view(batch, length, 2, self.heads, head_dim)
        kv = (kv[rows] if gather else kv).permute(2, 0, 3, 1, 4)
        mask = None
        if attn_mask is not None:
            query_rows = index if attn_mask.shape[2] > 1 else torch.zeros_like(index)
            mask = attn_mask[rows, :, query_rows].view(count, 1, 1, length)
        elif self.causal:
            positions = torch.arange(length, device=x.device)
            mask = (positions <= index[:, None]).view(count, 1, 1, length)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        return self.out_proj(out.reshape(count, width))


class Mlp(nn.Module):
    """Two-layer feed-forward block."""

    def __init__(self, width: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = ACTIVATION_LAYERS[activation]()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class LayerScale(nn.Module):
    """Per-channel gain ``gamma`` on a residual branch (timm's and open_clip's ``LayerScale``)."""

    def __init__(self, width: int, init_value: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((width,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def layer_scale(width: int, init_value: float | None) -> nn.Module:
    """A :class:`LayerScale` starting at ``init_value``, or the identity for ``None``."""
    return nn.Identity() if init_value is None else LayerScale(width, init_value)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: ``x + ls_1(attn(ln_1(x)))`` then ``x + ls_2(mlp(ln_2(x)))``
    (``ls_*``: open_clip's layer scale with ``ls_init_value``, else the identity)."""

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_width: int,
        activation: str,
        eps: float,
        causal: bool,
        mlp: nn.Module | None = None,
        ls_init_value: float | None = None,
    ) -> None:
        """``mlp``: the feed-forward module, when not the two-layer :class:`Mlp`."""
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = SelfAttention(width, heads, causal=causal)
        self.ls_1 = layer_scale(width, ls_init_value)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = mlp if mlp is not None else Mlp(width, mlp_width, activation)
        self.ls_2 = layer_scale(width, ls_init_value)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x), attn_mask))
        return x + self.ls_2(self.mlp(self.ln_2(x)))

    def forward_at(
        self, x: torch.Tensor, index: torch.Tensor, *where: torch.Tensor | None
    ) -> torch.Tensor:
        """``forward(x, attn_mask)[rows, index]``: the block's output at one position per
        query; ``where``: the optional ``rows`` and ``attn_mask`` of
        :meth:`SelfAttention.forward_at`."""
        attended = self.attn.forward_at(self.ln_1(x), index, *where)
        rows = where[0] if where else None
        if rows is None:
            rows = torch.arange(x.shape[0], device=x.device)
        y = x[rows, index] + self.ls_1(attended)
        return y + self.ls_2(self.mlp(self.ln_2(y)))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (timm's ``LayerNorm2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class BlockStack(nn.Module):
    """Residual blocks (``resblocks``), each called as ``block(x, *extra)`` (a mask, rotary
    positions...), checkpointed in training when ``grad_checkpointing`` is on."""

    resblocks: nn.ModuleList
    grad_checkpointing: bool

    def __init__(self, blocks: Iterable[nn.Module]) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def run(
        self, block: Callable[..., torch.Tensor], x: torch.Tensor, *extra: object
    ) -> torch.Tensor:
        """``block(x, *extra)`` (a block or one of its methods), checkpointed when enabled."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, *extra, use_reentrant=False)
        return block(x, *extra)

    def forward(self, x: torch.Tensor, *extra: object) -> torch.Tensor:
        for block in self.resblocks:
            x = self.run(block, x, *extra)
        return x

    def steps(self, *extra: object) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """Each block as a function of ``x`` alone (``extra`` bound, checkpointed as in
        ``forward``): the steps a :class:`~clipforge.models.intermediates.TokenPass` walks."""
        return [partial(self._step, block, extra) for block in self.resblocks]

    def _step(self, block: nn.Module, extra: tuple[object, ...], x: torch.Tensor) -> torch.Tensor:
        return self.run(block, x, *extra)


def check_tokens(tokens: torch.Tensor, context_length: int | None = None) -> None:
    """``ValueError`` unless ``tokens`` is ``(batch, length)`` with ``length`` at most
    ``context_length`` (when given)."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (batch, length), got shape {tuple(tokens.shape)}")
    if context_length is not None and tokens.shape[1] > context_length:
        raise ValueError(
            f"token sequences of length {tokens.shape[1]} exceed the model's "
            f"context length {context_length}"
        )


class Transformer(BlockStack):
    """A stack of residual attention blocks (``resblocks``), with optional checkpointing."""

    width: int

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        mlp_width: int,
        activation: str,
        eps: float = 1e-5,
        causal: bool = False,
        mlp: Callable[[], nn.Module] | None = None,
        ls_init_value: float | None = None,
    ) -> None:
        """``mlp``: builds each block's feed-forward module (default: :class:`Mlp`)."""
        super().__init__(
            ResidualAttentionBlock(
                width, heads, mlp_width, activation, eps, causal,
                mlp=mlp() if mlp else None, ls_init_value=ls_init_value,
            )  # fmt: skip
            for _ in range(layers)
        )
        self.width = width

    def forward(
        self,
        x: torch.Tensor,
        pool_index: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        pool_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(N, L, width) -> (N, L, width)``; with ``pool_index`` (``(Q,)`` positions, in
        rows ``pool_rows``, default one per row) only those positions' outputs,
        ``(Q, width)``. ``attn_mask`` (see :class:`SelfAttention`) goes to every block.

        Pooling towers read one token per sequence, so the last block computes just that
        row (its keys and values still span the sequence): the same result for ~1/12 less
        work in a 12-layer tower.
        """
        # ModuleList iterates as nn.Module; every entry is a ResidualAttentionBlock
        blocks = cast(list[ResidualAttentionBlock], list(self.resblocks))
        last = blocks.pop() if pool_index is not None and blocks else None
        for block in blocks:
            x = self.run(block, x) if attn_mask is None else self.run(block, x, attn_mask)
        if pool_index is None:
            return x
        if last is None:
            rows = torch.arange(x.shape[0], device=x.device) if pool_rows is None else pool_rows
            return x[rows, pool_index]
        return self.run(last.forward_at, x, pool_index, pool_rows, attn_mask)

    def init_weights(self) -> None:
        """OpenAI's initialisation: std scaled by width and depth."""
        proj_std = self.width**-0.5 * (2 * len(self.resblocks)) ** -0.5
        attn_std = self.width**-0.5
        fc_std = (2 * self.width) ** -0.5
        for block in cast(Iterable[ResidualAttentionBlock], self.resblocks):
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.get_parameter("mlp.c_fc.weight"), std=fc_std)
            nn.init.normal_(block.get_parameter("mlp.c_proj.weight"), std=proj_std)


def init_scaled_normal_(tensor: torch.Tensor, fan: int) -> None:
    """Normal init with std ``fan**-0.5``."""
    nn.init.normal_(tensor, std=1.0 / math.sqrt(fan))


def embedding_for_init(rows: int, width: int) -> nn.Embedding:
    """An ``nn.Embedding`` whose weights are left for the tower's ``init_weights`` to draw.

    ``nn.Embedding`` fills its table with N(0, 1) when built, and the towers draw it again
    at their own scale: for CLIP's 49,408-token vocabulary that first fill was a third of
    building a small text tower, thrown away (250,112 tokens for mT5)."""
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width))
