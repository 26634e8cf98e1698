"""OpenAI's ModifiedResNet image tower.

Differences from torchvision's ResNet: a 3-convolution stem with average pooling,
anti-aliased strided convolutions (average pool before the stride-1 convolution), and
a QKV attention pool instead of global average pooling.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..configs import ResNetConfig
from .intermediates import Intermediates, IntermediatesRequest, stage_intermediates
from .tower import Tower, TowerSettings, register_tower


class Bottleneck(nn.Module):
    """ResNet bottleneck block with anti-aliased striding."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)  # in place: less memory traffic
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(self.avgpool(out)))
        out += identity
        return F.relu(out, inplace=True)


class AttentionPool2d(nn.Module):
    """Attention pooling: the mean feature queries all spatial features (plus itself)."""

    def __init__(self, spatial: int, width: int, heads: int, output_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(spatial**2 + 1, width) / width**0.5)
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        batch, length, width = x.shape
        head_dim = width // self.heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, -1, self.heads, head_dim).transpose(1, 2)

        q = heads(self.q_proj(x[:, :1]))
        out = F.scaled_dot_product_attention(q, heads(self.k_proj(x)), heads(self.v_proj(x)))
        return self.c_proj(out.transpose(1, 2).reshape(batch, width))


@register_tower(ResNetConfig)
class ModifiedResNet(Tower):
    """ResNet image tower of OpenAI's RN50/RN101/RN50x* models (ReLU and BatchNorm throughout,
    so the model-wide activation and LayerNorm eps do not apply)."""

    head_names = ("attnpool",)

    def __init__(self, cfg: ResNetConfig, settings: TowerSettings) -> None:
        super().__init__()
        width = cfg.width
        self.image_size = cfg.image_size
        self.output_dim = embed_dim = settings.embed_dim
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, cfg.layers[0])
        self.layer2 = self._make_layer(width * 2, cfg.layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, cfg.layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, cfg.layers[3], stride=2)
        self.attnpool = AttentionPool2d(cfg.image_size // 32, width * 32, cfg.heads, embed_dim)
        self.grad_checkpointing = False
        self.init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def init_weights(self) -> None:
        std = self.attnpool.c_proj.in_features**-0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj):
            nn.init.normal_(proj.weight, std=std)
        nn.init.normal_(self.attnpool.c_proj.weight, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in cast(Iterable[Bottleneck], stage):
                nn.init.zeros_(block.bn3.weight)  # each residual branch starts as identity

    @property
    def blocks(self) -> list[nn.Module]:
        """The bottleneck blocks of all four stages, in order."""
        return [block for stage in self.stages for block in stage]

    @property
    def stages(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, H·W, channels)``: the last stage's feature map, one row per position."""
        return self._trunk(inputs).flatten(2).transpose(1, 2)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        x = F.relu(self.bn3(self.conv3(x)), inplace=True)
        return self.avgpool(x)

    def _input(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.conv1.weight.dtype)
        if x.device.type == "cpu":  # oneDNN convolutions run faster on NHWC activations
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint_sequential(
                stage, len(stage), x, use_reentrant=False
            )
        return stage(x)

    def _trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.stem(self._input(pixels))
        for stage in self.stages:
            x = self._run_stage(stage, x)
        return x

    def intermediates(self, inputs: torch.Tensor, request: IntermediatesRequest) -> Intermediates:
        """open_clip's ``ModifiedResNet.forward_intermediates``: five feature maps (stem, then
        ``layer1``..``layer4``), features ``attnpool`` of the last map (see
        :func:`~clipforge.models.intermediates.stage_intermediates`; open_clip 3.x inverts
        ``stop_early`` for ResNets and fails to pool an earlier map; every result it does
        return is reproduced)."""
        stages = [self.stem, *(partial(self._run_stage, s) for s in self.stages)]
        return stage_intermediates(stages, self._input(inputs), request, self.attnpool)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.attnpool(self._trunk(pixels))
