"""ConvNeXt image tower (LAION's ConvNeXt CLIPs), native, with open_clip's parameter names.

open_clip wraps a timm ``ConvNeXt`` as ``visual.trunk`` and adds its projection as
``visual.head``; this tower keeps exactly those module paths (``trunk.stem``,
``trunk.stages.{i}.downsample`` / ``.blocks.{j}``, ``trunk.head.norm``, ``head.proj`` or
``head.mlp``), so open_clip's ConvNeXt checkpoints load with no renaming beyond the text
tower's, and timm is not needed at inference. The computation follows timm's
channels-last block: depthwise conv → LayerNorm → fc1 → GELU → fc2 → layer scale → residual.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..configs.convnext import ConvNextVisionConfig
from .intermediates import Intermediates, IntermediatesRequest, stage_intermediates
from .layers import LayerNorm2d
from .staged import StagedTower
from .tower import TowerSettings, register_tower


class ConvMlp(nn.Module):
    """``fc2(gelu(fc1(x)))`` on channels-last tensors (timm's ``Mlp``; names kept)."""

    def __init__(self, width: int, hidden: int, out: int | None = None, bias2: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, out or width, bias=bias2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ConvNextBlock(nn.Module):
    """``x + gamma * mlp(norm(conv_dw(x)))`` (norm and MLP channels-last)."""

    def __init__(self, dim: int, cfg: ConvNextVisionConfig) -> None:
        super().__init__()
        k = cfg.kernel_size
        self.conv_dw = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = ConvMlp(dim, int(cfg.mlp_ratio * dim))
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv_dw(x).permute(0, 2, 3, 1))
        y = self.mlp(y) * self.gamma  # timm's order: folding gamma into fc2 drifts > 1e-5
        return x + y.permute(0, 3, 1, 2)


class ConvNextStage(nn.Module):
    """A downsample (LayerNorm2d + 2×2 stride-2 conv; every stage but the first), then the
    stage's blocks (``in_dim`` 0: the first stage, which has none)."""

    def __init__(self, in_dim: int, dim: int, depth: int, cfg: ConvNextVisionConfig) -> None:
        super().__init__()
        self.downsample: nn.Module = nn.Identity()
        if in_dim:
            self.downsample = nn.Sequential(
                LayerNorm2d(in_dim, eps=cfg.norm_eps), nn.Conv2d(in_dim, dim, 2, stride=2)
            )
        self.blocks = nn.Sequential(*(ConvNextBlock(dim, cfg) for _ in range(depth)))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class PoolNormHead(nn.Module):
    """timm's ``NormMlpClassifierHead`` without classes: global average pool, LayerNorm."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.norm = LayerNorm2d(width, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.mean((2, 3), keepdim=True)).flatten(1)


class ConvNextTrunk(nn.Module):
    """timm ``ConvNeXt`` with ``num_classes=0``: patch stem, stages, pooled-norm head."""

    def __init__(self, cfg: ConvNextVisionConfig) -> None:
        super().__init__()
        dims = cfg.dims
        self.stem = nn.Sequential(
            nn.Conv2d(3, dims[0], cfg.patch_size, stride=cfg.patch_size),
            LayerNorm2d(dims[0], eps=cfg.norm_eps),
        )
        self.stages = nn.ModuleList(
            ConvNextStage(dims[i - 1] if i else 0, dim, depth, cfg)
            for i, (depth, dim) in enumerate(zip(cfg.depths, dims, strict=True))
        )
        self.head = PoolNormHead(dims[-1], cfg.norm_eps)


def projection_head(kind: str, width: int, embed_dim: int) -> nn.Sequential:
    """open_clip ``TimmModel.head``: ``proj`` (bias-free linear) or ``mlp`` (hidden 2·embed)."""
    if kind == "linear":
        return nn.Sequential(OrderedDict(proj=nn.Linear(width, embed_dim, bias=False)))
    if kind == "mlp":
        return nn.Sequential(OrderedDict(mlp=ConvMlp(width, 2 * embed_dim, embed_dim, bias2=False)))
    raise ValueError(f"unknown projection head {kind!r} (expected 'linear' or 'mlp')")


@register_tower(ConvNextVisionConfig)
class ConvNextTower(StagedTower):
    """ConvNeXt trunk + open_clip's projection; blocks are every ConvNeXt block in order."""

    trunk: ConvNextTrunk

    def __init__(self, cfg: ConvNextVisionConfig, settings: TowerSettings) -> None:
        head = projection_head(cfg.head, cfg.width, settings.embed_dim)
        super().__init__(cfg, settings.embed_dim, ConvNextTrunk(cfg), head)

    @property
    def stages(self) -> list[ConvNextStage]:
        return cast(list[ConvNextStage], list(self.trunk.stages))

    @property
    def final_norm(self) -> nn.Module:
        """The pooled norm (timm's head norm)."""
        return self.trunk.head

    def _stem(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.device.type == "cpu":  # NHWC: the blocks' channels-last views need no copy
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.trunk.stem(pixels)

    def _feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self._stem(pixels)
        for stage in self.stages:
            x = stage(x)
        return x

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The final stage's map → ``(N, embed_dim)``: pool, norm, projection."""
        return self.head(self.trunk.head(feature_map))

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, H·W, channels)``: the last stage's map, one row per position (timm's
        ``forward_features``; the tower's only norm follows the pool)."""
        return self._feature_map(inputs).flatten(2).transpose(1, 2)

    def intermediates(self, inputs: torch.Tensor, request: IntermediatesRequest) -> Intermediates:
        """timm ``ConvNeXt.forward_intermediates`` under open_clip's ``TimmModel``: one NCHW
        map per stage (indices count stages); features pooled from the last stage's map (see
        :func:`~clipforge.models.intermediates.stage_intermediates`; ``"NLC"`` flattens each
        map, beyond timm's NCHW only)."""
        return stage_intermediates(self.stages, self._stem(inputs), request, self.pool)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pool(self._feature_map(pixels))
