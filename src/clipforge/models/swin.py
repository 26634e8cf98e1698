"""Swin Transformer image tower (timm's ``SwinTransformer`` under open_clip's ``TimmModel``).

The tower keeps open_clip's parameter names (``trunk.patch_embed``, ``trunk.layers.{s}``
with ``downsample`` and ``blocks.{b}`` holding ``norm1``, ``attn.qkv``,
``attn.relative_position_bias_table``, ``attn.proj``, ``norm2``, ``mlp.fc1``/``fc2``;
``trunk.norm``; ``head.proj``), so open_clip's weights load with no image-tower renaming.
Tokens flow as ``(N, H, W, C)`` maps, as in timm. The relative-position index and the
shifted-window mask are computed from the config (on the input's device), not stored.
"""

from __future__ import annotations

from functools import cache
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..configs.swin import SwinConfig
from .convnext import projection_head
from .intermediates import Intermediates, IntermediatesRequest, check_format, run_blocks
from .staged import StagedTower, timm_init_
from .tower import TowerSettings, register_tower

#: timm's additive mask value between tokens of different regions of a shifted window
_MASKED = -100.0


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(N, H, W, C)`` → ``(N·windows, window², C)``, windows in row-major order."""
    n, h, w, c = x.shape
    x = x.view(n, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(N·windows, window², C)`` → ``(N, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


@cache
def _relative_index(window: int) -> torch.Tensor:
    """Each token pair's row in the ``(2·window − 1)²`` bias table (timm's layout)."""
    grid = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = grid.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


@cache
def _shift_mask(size: int, window: int, shift: int) -> torch.Tensor:
    """``(windows, window², window²)`` additive mask keeping attention inside each region a
    cyclic shift by ``shift`` brought together (timm's ``get_attn_mask``)."""
    regions = torch.zeros(1, size, size, 1)
    bounds = ((0, -window), (-window, -shift), (-shift, None))
    for label, (hs, ws) in enumerate((h, w) for h in bounds for w in bounds):
        regions[:, hs[0] : hs[1], ws[0] : ws[1], :] = label
    ids = window_partition(regions, window).squeeze(-1)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, _MASKED)


class WindowAttention(nn.Module):
    """Multi-head attention inside each window with a learned relative-position bias."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``(N·windows, window², C)``; ``mask``: ``(windows, window², window²)``."""
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        index = _relative_index(self.window).to(x.device)
        bias = self.relative_position_bias_table[index.view(-1)].view(length, length, -1)
        bias = bias.permute(2, 0, 1).unsqueeze(0).to(x.dtype)  # (1, heads, L, L)
        if mask is not None:
            windows = mask.shape[0]
            bias = bias.view(1, 1, self.heads, length, length) + mask.to(x.dtype)[None, :, None]
            bias = bias.expand(batch // windows, -1, -1, -1, -1).reshape(
                -1, self.heads, length, length
            )
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class SwinMlp(nn.Module):
    """timm's ``Mlp``: ``fc2(gelu(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """``x + attn(norm1(x))`` over (shifted) windows, then ``x + mlp(norm2(x))``."""

    def __init__(self, cfg: SwinConfig, stage: int, shifted: bool) -> None:
        super().__init__()
        dim, self.size = cfg.dims[stage], cfg.stage_grid(stage)
        self.window = cfg.stage_window(stage)
        self.shift = self.window // 2 if shifted and self.size > cfg.window_size else 0
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = WindowAttention(dim, cfg.heads[stage], self.window)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = SwinMlp(dim, int(dim * cfg.mlp_ratio))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        if (h, w) != (self.size, self.size):
            raise ValueError(f"Swin block built for a {self.size}² map, got {h}×{w}")
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        mask = _shift_mask(self.size, self.window, self.shift).to(x.device) if self.shift else None
        out = window_reverse(self.attn(window_partition(x, self.window), mask), self.window, h, w)
        return torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2)) if self.shift else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Each 2×2 neighbourhood's channels concatenated (timm's order), normed, projected."""

    def __init__(self, dim: int, out: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        x = x.reshape(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Optional :class:`PatchMerging` (``downsample``), then the stage's blocks."""

    def __init__(self, cfg: SwinConfig, stage: int) -> None:
        super().__init__()
        self.grad_checkpointing = False
        dims = cfg.dims
        self.downsample: nn.Module = (
            PatchMerging(dims[stage - 1], dims[stage], cfg.norm_eps) if stage else nn.Identity()
        )
        self.blocks = nn.Sequential(
            *(SwinBlock(cfg, stage, bool(i % 2)) for i in range(cfg.depths[stage]))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            use = self.grad_checkpointing and self.training and torch.is_grad_enabled()
            x = checkpoint(block, x, use_reentrant=False) if use else block(x)
        return x


class PatchEmbed(nn.Module):
    """Strided convolution to ``(N, H, W, C)`` then LayerNorm (timm's ``PatchEmbed``)."""

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(pixels).permute(0, 2, 3, 1))


class SwinTrunk(nn.Module):
    """timm's ``SwinTransformer`` without its classifier: ``patch_embed``, ``layers``, ``norm``."""

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg)
        self.layers = nn.Sequential(*(SwinStage(cfg, s) for s in range(len(cfg.depths))))
        self.norm = nn.LayerNorm(cfg.dims[-1], eps=cfg.norm_eps)


@register_tower(SwinConfig)
class SwinTower(StagedTower):
    """Swin trunk + open_clip's bias-free linear head; blocks are every Swin block in order."""

    trunk: SwinTrunk
    config: SwinConfig

    def __init__(self, cfg: SwinConfig, settings: TowerSettings) -> None:
        head = projection_head("linear", cfg.dims[-1], settings.embed_dim)
        super().__init__(cfg, settings.embed_dim, SwinTrunk(cfg), head)

    def init_weights(self) -> None:
        """timm's init: truncated normal (std 0.02) weights and bias tables, zero biases."""
        timm_init_(self)
        for module in self.modules():
            if isinstance(module, WindowAttention):
                nn.init.trunc_normal_(module.relative_position_bias_table, std=0.02)

    @property
    def stages(self) -> list[SwinStage]:
        return cast(list[SwinStage], list(self.trunk.layers))

    @property
    def final_norm(self) -> nn.Module:
        return self.trunk.norm

    def no_weight_decay(self) -> set[str]:
        """The default rule plus timm's: the relative-position bias tables."""
        tables = {n for n, _ in self.named_parameters() if n.endswith("bias_table")}
        return super().no_weight_decay() | tables

    def _feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk.layers(self.trunk.patch_embed(pixels))

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The last stage's ``(N, H, W, C)`` map → norm, average pool, projection."""
        return self.head(self.trunk.norm(feature_map).mean(dim=(1, 2)))

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, H·W, C)``: the last stage's normed map, one row per position (timm's
        ``forward_features``, flattened)."""
        return self.trunk.norm(self._feature_map(inputs)).flatten(1, 2)

    def intermediates(self, inputs: torch.Tensor, request: IntermediatesRequest) -> Intermediates:
        """timm ``SwinTransformer.forward_intermediates`` under open_clip's ``TimmModel``: one
        map per stage (NCHW; ``"NLC"`` flattens it), ``normalize_intermediates`` norms only
        the last stage's (the norm is sized for it); ``stop_early`` skips stages only with
        ``intermediates_only`` (the head needs the last stage)."""
        check_format(request.output_fmt)
        stop = request.stop_early and request.intermediates_only
        stages = self.stages
        x, maps = run_blocks(stages, self.trunk.patch_embed(inputs), request.indices, stop)
        if request.normalize_intermediates:  # only the last stage has the norm's width
            maps = [self.trunk.norm(m) if m.shape[-1] == self.config.dims[-1] else m for m in maps]
        if request.output_fmt == "NLC":
            maps = [m.flatten(1, 2) for m in maps]
        else:
            maps = [m.permute(0, 3, 1, 2).contiguous() for m in maps]
        out: Intermediates = {"image_intermediates": maps}
        if not request.intermediates_only:
            out["image_features"] = self.pool(x)
        return out

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pool(self._feature_map(pixels))
