"""timm ViT trunks of open_clip's ``vit_medium_patch16_gap_256`` and
``vit_relpos_medium_patch16_cls_224``, native, on clipforge's block conventions.

Blocks are ``transformer.resblocks.*`` with ``ln_1``/``ln_2``, a fused
``attn.in_proj_weight`` (bias optional), ``attn.out_proj``, ``mlp.c_fc``/``mlp.c_proj``
(LoRA's targets) and, with layer scale, ``ls_1``/``ls_2`` gains. The relative-position
bias is timm's ``RelPosMlp`` in its ``cr`` mode: an MLP (2 → hidden → heads, ReLU) over the
signed log of every patch-to-patch offset, zero for pairs with the class token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configs.timm_vit import TimmViTConfig
from .layers import BlockStack, LayerScale, Mlp
from .tower import PatchTransformerTower, TowerSettings, register_tower


class RelPosMlp(nn.Module):
    """Attention bias ``(1, heads, L, L)`` from log-spaced patch offsets (timm, mode ``cr``)."""

    def __init__(self, grid: int, heads: int, hidden: int, prefix: int) -> None:
        super().__init__()
        self.grid, self.heads, self.prefix = grid, heads, prefix
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(2, hidden))
        self.mlp.add_module("act", nn.ReLU())
        self.mlp.add_module("fc2", nn.Linear(hidden, heads))

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Signed-log offsets ``(2g-1, 2g-1, 2)`` and each patch pair's index into them."""
        g = self.grid
        offsets = torch.arange(-(g - 1), g, device=device).float()
        table = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)
        table = torch.sign(table) * torch.log(1.0 + table.abs())
        coords = torch.stack(
            torch.meshgrid(
                torch.arange(g, device=device), torch.arange(g, device=device), indexing="ij"
            )  # fmt: skip
        ).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (g - 1)
        return table, rel[..., 0] * (2 * g - 1) + rel[..., 1]

    def forward(self, device: torch.device) -> torch.Tensor:
        table, index = self._tables(device)
        bias = self.mlp(table).view(-1, self.heads)[index.view(-1)]
        bias = bias.view(self.grid**2, self.grid**2, self.heads).permute(2, 0, 1)
        if self.prefix:
            bias = F.pad(bias, [self.prefix, 0, self.prefix, 0])
        return bias.unsqueeze(0)


class TimmAttention(nn.Module):
    """Fused-projection self-attention, optional QKV bias and relative-position bias."""

    def __init__(self, cfg: TimmViTConfig) -> None:
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * w, w))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * w)) if cfg.qkv_bias else None
        self.out_proj = nn.Linear(w, w)
        self.rel_pos = (
            RelPosMlp(cfg.grid_size, cfg.heads, cfg.rel_pos_dim, int(cfg.class_token))
            if cfg.rel_pos_dim
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.rel_pos(x.device).to(x.dtype) if self.rel_pos is not None else None
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class TimmBlock(nn.Module):
    """Pre-LN block ``x + ls_1(attn(ln_1(x)))``, ``x + ls_2(mlp(ln_2(x)))``."""

    def __init__(self, cfg: TimmViTConfig) -> None:
        super().__init__()
        w, eps = cfg.width, cfg.norm_eps
        self.ln_1 = nn.LayerNorm(w, eps=eps)
        self.attn = TimmAttention(cfg)
        self.ls_1: nn.Module = LayerScale(w) if cfg.layer_scale else nn.Identity()
        self.ln_2 = nn.LayerNorm(w, eps=eps)
        self.mlp = Mlp(w, cfg.mlp_width, "gelu")
        self.ls_2: nn.Module = LayerScale(w) if cfg.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x)))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


@register_tower(TimmViTConfig)
class TimmVisionTransformer(PatchTransformerTower):
    """Biased patch conv, optional class token and learned positions, timm blocks, final
    ``ln_post``, average or class-token pool, bias-free ``proj`` (open_clip's head)."""

    transformer: BlockStack  # of TimmBlock

    head_names = ("ln_post", "proj")
    config: TimmViTConfig

    def __init__(self, cfg: TimmViTConfig, settings: TowerSettings) -> None:
        super().__init__()
        self._init_patches(cfg, settings.embed_dim, class_token=cfg.class_token, bias=True)
        w = cfg.width
        self.positional_embedding = (
            None
            if cfg.rel_pos_dim
            else nn.Parameter(torch.empty(cfg.grid_size**2 + self.num_prefix, w))
        )
        self.transformer = BlockStack(TimmBlock(cfg) for _ in range(cfg.layers))
        self.ln_post = nn.LayerNorm(w, eps=cfg.norm_eps)
        self.proj = nn.Linear(w, settings.embed_dim, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        """timm's ViT init: truncated normal (std 0.02) matrices and embeddings, zero biases."""
        for name, param in self.named_parameters():
            if param.ndim >= 2 or name in ("class_embedding", "positional_embedding"):
                nn.init.trunc_normal_(param, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        nn.init.normal_(self.proj.weight, std=self.config.width**-0.5)

    def no_weight_decay(self) -> set[str]:
        """The default rule plus the position and class embeddings."""
        names = {"positional_embedding", "class_embedding"}
        return super().no_weight_decay() | {n for n, _ in self.named_parameters() if n in names}

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        if self.class_embedding is not None:
            cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
        if self.positional_embedding is not None:
            x = x + self.positional_embedding.to(x.dtype)
        return x

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_post(x)
        pooled = x[:, self.num_prefix :].mean(dim=1) if self.config.pool == "avg" else x[:, 0]
        return self.proj(pooled)

    def _block_inputs(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[()]]:
        return self._tokens(pixels), ()
