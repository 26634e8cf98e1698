"""EVA-CLIP image tower: a class-token ViT with EVA-02's rotary positions, SwiGLU and sub-LNs.

Written on clipforge's conventions so every generic feature applies: blocks are
``transformer.resblocks.*`` with ``ln_1``/``ln_2``, a fused ``attn.in_proj_weight`` and
``attn.out_proj``, ``mlp.c_fc``/``mlp.c_proj`` (LoRA's targets; the SwiGLU ``c_fc`` stacks
the gate rows above the value rows), attention runs through SDPA, and pooling computes only
the class token's row in the last block. EVA's key projection has no bias, so the tower
keeps ``attn.q_bias`` and ``attn.v_bias`` instead of a full ``in_proj_bias``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..configs.eva import EvaVisionConfig
from .intermediates import TokenPass, image_grid
from .layers import BlockStack, fused_query_kv
from .tower import TowerSettings, TransformerTower, register_tower

Rope = tuple[torch.Tensor, torch.Tensor]  # (sin, cos), each (1 or N, 1, patches, head_width)


def rope_tables(cfg: EvaVisionConfig, device: torch.device | None = None) -> Rope:
    """EVA-02's 2-D rotary table for the patch grid: ``(sin, cos)``, ``(grid², head_width)``.

    Each head's channels are split between the row and the column coordinate (``head_width
    / 4`` inverse frequencies ``10000^(-k / n)`` each, every angle used for a channel pair);
    coordinates are rescaled onto ``rope_ref_grid`` (EVA's rule for other resolutions).
    """
    bands = cfg.head_width // 4
    exponent = torch.arange(bands, device=device, dtype=torch.int64).float() / bands
    inv_freq = 1.0 / (10000.0**exponent)
    grid = cfg.grid_size
    coords = torch.arange(grid, device=device, dtype=torch.int64).float() / grid * cfg.rope_ref_grid
    mesh = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), dim=-1)  # (g, g, 2)
    angles = (mesh.unsqueeze(-1) * inv_freq).flatten(0, 1).flatten(1)  # (g², head_width / 2)
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.sin(), angles.cos()


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate channel pairs ``(x0, x1)`` of ``x`` ``(N, heads, L, head_width)`` by the table."""
    sin, cos = rope
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (x * cos + rotated * sin).to(x.dtype)


class EvaAttention(nn.Module):
    """Self-attention with a fused, key-bias-free projection, rotary positions on the patch
    tokens (the class token at position 0 is not rotated) and an optional sub-LN."""

    def __init__(self, width: int, heads: int, inner_norm: bool, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.ln = nn.LayerNorm(width, eps=eps) if inner_norm else None
        self.out_proj = nn.Linear(width, width)

    def _bias(self) -> torch.Tensor:
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.ln(x) if self.ln is not None else x)

    def _rotate(self, x: torch.Tensor, rope: Rope | None) -> torch.Tensor:
        if rope is None:
            return x
        return torch.cat((x[:, :, :1], apply_rope(x[:, :, 1:], rope)), dim=2)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """The fused q/k/v projection ``(N, L, 3·width)`` (an int8 copy swaps this)."""
        return F.linear(x, self.in_proj_weight, self._bias())

    def _project_cls(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The class token's query ``(N, width)``, every key and value ``(N, L, 2·width)``."""
        return fused_query_kv(self.in_proj_weight, self._bias(), x[:, 0], x)

    def forward(self, x: torch.Tensor, rope: Rope | None) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self._project(x)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self._rotate(qkv[0], rope), self._rotate(qkv[1], rope)
        out = F.scaled_dot_product_attention(q, k, qkv[2])
        return self._out(out.transpose(1, 2).reshape(batch, length, width))

    def forward_cls(self, x: torch.Tensor, rope: Rope | None) -> torch.Tensor:
        """``forward(x, rope)[:, 0]``: the class token's output only (keys span the sequence)."""
        batch, length, width = x.shape
        head_dim = width // self.heads
        q, kv = self._project_cls(x)
        q = q.view(batch, self.heads, 1, head_dim)
        kv = kv.view(batch, length, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, self._rotate(kv[0], rope), kv[1])
        return self._out(out.reshape(batch, width))


class EvaMlp(nn.Module):
    """GELU MLP, or SwiGLU (``silu(gate) * value``, both from ``c_fc``), optional sub-LN."""

    def __init__(self, width: int, hidden: int, swiglu: bool, norm: bool, eps: float) -> None:
        super().__init__()
        self.swiglu = swiglu
        self.c_fc = nn.Linear(width, 2 * hidden if swiglu else hidden)
        self.ln = nn.LayerNorm(hidden, eps=eps) if norm else None
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)
        if self.swiglu:
            gate, value = x.chunk(2, dim=-1)
            x = F.silu(gate) * value
        else:
            x = F.gelu(x)
        return self.c_proj(self.ln(x) if self.ln is not None else x)


class EvaBlock(nn.Module):
    """Pre-LN block ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``; post-norm (EVA-02-E)
    applies the norms to the branch outputs instead: ``x + ln_1(attn(x))``."""

    def __init__(self, cfg: EvaVisionConfig) -> None:
        super().__init__()
        width, eps = cfg.width, cfg.norm_eps
        self.post_norm = cfg.post_norm
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = EvaAttention(width, cfg.heads, cfg.attn_norm, eps)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = EvaMlp(width, cfg.mlp_width, cfg.swiglu, cfg.mlp_norm, eps)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.ln_2(self.mlp(x)) if self.post_norm else self.mlp(self.ln_2(x)))

    def forward(self, x: torch.Tensor, rope: Rope | None) -> torch.Tensor:
        if self.post_norm:
            return self._mlp(x + self.ln_1(self.attn(x, rope)))
        return self._mlp(x + self.attn(self.ln_1(x), rope))

    def forward_cls(self, x: torch.Tensor, rope: Rope | None) -> torch.Tensor:
        """``forward(x, rope)[:, 0]``, computing only the class token's row."""
        if self.post_norm:
            return self._mlp(x[:, 0] + self.ln_1(self.attn.forward_cls(x, rope)))
        return self._mlp(x[:, 0] + self.attn.forward_cls(self.ln_1(x), rope))


class EvaTransformer(BlockStack):
    """A stack of :class:`EvaBlock` whose last block can compute the class token only."""

    def __init__(self, cfg: EvaVisionConfig) -> None:
        super().__init__(EvaBlock(cfg) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor, rope: Rope | None, pool: bool = False) -> torch.Tensor:  # type: ignore[override]
        """``(N, L, width)`` → the same shape, or with ``pool`` the class token ``(N, width)``
        (the last block then computes that row only)."""
        # ModuleList iterates as nn.Module; every entry is a EvaBlock
        blocks = cast(list[EvaBlock], list(self.resblocks))
        last = blocks.pop() if pool else None
        for block in blocks:
            x = self.run(block, x, rope)
        if last is None:
            return x
        return self.run(last.forward_cls, x, rope)


@register_tower(EvaVisionConfig)
class EvaVisionTransformer(TransformerTower):
    """Biased patch conv, class token, learned positions (+ rotary on patches), EVA blocks,
    ``ln_post`` on the class token, biased linear ``proj`` to ``embed_dim``."""

    transformer: EvaTransformer

    head_names = ("ln_post", "proj")
    supports_patch_dropout = True

    def __init__(self, cfg: EvaVisionConfig, settings: TowerSettings) -> None:
        super().__init__()
        self.config = cfg
        self.image_size = cfg.image_size
        self.output_dim = settings.embed_dim
        self.patch_dropout = 0.0
        width = cfg.width
        self.patch_embed = nn.Conv2d(3, width, cfg.patch_size, stride=cfg.patch_size)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(cfg.grid_size**2 + 1, width))
        self.transformer = EvaTransformer(cfg)
        self.ln_post = nn.LayerNorm(width, eps=cfg.norm_eps)
        self.proj = nn.Linear(width, settings.embed_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """timm's EVA init: truncated normal (std 0.02) for matrices, embeddings; zero biases."""
        for name, param in self.named_parameters():
            if param.ndim >= 2 or name == "class_embedding":
                nn.init.trunc_normal_(param, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        # depth-scaled residual outputs
        for i, block in enumerate(cast(Iterable[EvaBlock], self.blocks)):
            block.attn.out_proj.weight.data.div_((2.0 * (i + 1)) ** 0.5)
            block.mlp.c_proj.weight.data.div_((2.0 * (i + 1)) ** 0.5)

    def no_weight_decay(self) -> set[str]:
        """The default rule plus the position and class embeddings (as EVA trains them)."""
        return super().no_weight_decay() | {"positional_embedding", "class_embedding"}

    def _tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, Rope | None]:
        """Class token + patch embeddings with positions, and the rotary table for them."""
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)  # (N, grid², width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        rope = rope_tables(self.config, x.device) if self.config.rope else None
        if self.training and self.patch_dropout > 0:
            return self._drop_patches(x, rope)
        if rope is not None:
            rope = (rope[0][None, None], rope[1][None, None])
        return x, rope

    def _drop_patches(self, x: torch.Tensor, rope: Rope | None) -> tuple[torch.Tensor, Rope | None]:
        """Training-time patch dropout (FLIP): a random subset of patches and their rotations."""
        keep = max(1, int((x.shape[1] - 1) * (1.0 - self.patch_dropout)))
        idx = torch.rand(x.shape[0], x.shape[1] - 1, device=x.device).topk(keep, dim=-1).indices
        patches = x[:, 1:].gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        if rope is not None:
            rope = (rope[0][idx].unsqueeze(1), rope[1][idx].unsqueeze(1))
        return torch.cat([x[:, :1], patches], dim=1), rope

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, 1 + grid², width)``: the class token then every patch token, after ``ln_post``."""
        x, rope = self._tokens(inputs)
        return self.ln_post(self.transformer(x, rope))

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        """timm ``Eva.forward_intermediates`` as open_clip's ``TimmModel`` calls it: class token
        as the prefix, features ``proj(ln_post(x[:, 0]))`` from the same pass."""
        x, rope = self._tokens(inputs)
        return TokenPass(
            self.transformer.steps(rope),
            x,
            kind="image",
            norm=self.ln_post,
            pool=lambda y: self.proj(self.ln_post(y[:, 0])),
            num_prefix=1,
            grid=image_grid(inputs, self.patch_embed.kernel_size[0]),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x, rope = self._tokens(pixels)
        return self.proj(self.ln_post(self.transformer(x, rope, pool=True)))
