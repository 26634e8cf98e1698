"""ViTamin image tower (timm's ``vitamin_*`` trunks under open_clip's ``TimmModel``), native.

The convolutional stages keep timm's module names under ``conv_stem`` (``stem.conv1``,
``stages.{s}.{b}.conv2_kxk``, ``pool.proj``...); the transformer blocks are clipforge's
(``transformer.resblocks.*`` with ``ln_1``/``ln_2``, a fused ``attn.in_proj_weight``,
``attn.out_proj`` and a GeGLU ``mlp`` whose ``c_fc`` stacks timm's gate rows ``w0`` above
its value rows ``w1``), so LoRA, checkpointing and the optimizer groups apply;
:mod:`clipforge.checkpoints.formats.vitamin_keys` renames open_clip's keys.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..configs.vitamin import VITAMIN_STRIDE, ViTaminVisionConfig, mbconv_hidden
from .intermediates import TokenPass, image_grid
from .layers import LayerNorm2d, Transformer
from .tower import TowerSettings, TransformerTower, register_tower


class GeGluMlp(nn.Module):
    """timm's ``GeGluMlp``: ``c_proj(gelu(gate) * value)`` of ``c_fc(ln(x))`` (gate rows first)."""

    def __init__(self, width: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width, eps=eps)
        self.c_fc = nn.Linear(width, 2 * hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # two GEMMs on the halves, as timm's w0/w1: one stacked GEMM rounds differently
        # (~1e-6 a block, 2e-5 after ViTamin-L's 31 blocks); the halves give timm's bits
        x = self.ln(x)
        (w_gate, w_value), (b_gate, b_value) = self.c_fc.weight.chunk(2), self.c_fc.bias.chunk(2)
        return self.c_proj(F.gelu(F.linear(x, w_gate, b_gate)) * F.linear(x, w_value, b_value))


class Downsample(nn.Module):
    """A strided block's shortcut: 3×3/2 average pool (padding not counted), then a 1×1
    convolution to the new width (``expand``) where the width changes."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.expand: nn.Module = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(x))


class MbConvBlock(nn.Module):
    """timm's ``MbConvLNBlock``: ``shortcut(x) + conv3(gelu(dw(gelu(conv1(norm(x))))))``."""

    def __init__(self, cin: int, cout: int, stride: int, eps: float) -> None:
        super().__init__()
        hidden = mbconv_hidden(cout)
        self.shortcut: nn.Module = (
            Downsample(cin, cout) if stride == 2
            else nn.Conv2d(cin, cout, 1) if cin != cout
            else nn.Identity()
        )  # fmt: skip
        self.pre_norm = LayerNorm2d(cin, eps=eps)
        self.conv1_1x1 = nn.Conv2d(cin, hidden, 1)
        self.conv2_kxk = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden)
        self.conv3_1x1 = nn.Conv2d(hidden, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1_1x1(self.pre_norm(x)))
        return self.shortcut(x) + self.conv3_1x1(F.gelu(self.conv2_kxk(y)))


class Stem(nn.Module):
    """3×3/2 convolution, LayerNorm + GELU, 3×3 convolution."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.norm1 = LayerNorm2d(width, eps=eps)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.norm1(self.conv1(x))))


class StridedConv(nn.Module):
    """LayerNorm, then a 3×3/2 convolution to the transformer width."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(cin, eps=1e-6)  # timm fixes this one's eps
        self.proj = nn.Conv2d(cin, width, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


def _stage(cin: int, cout: int, depth: int, eps: float) -> nn.Sequential:
    """``depth`` MBConv blocks, the first one strided (and widening)."""
    return nn.Sequential(
        *(MbConvBlock(cout if b else cin, cout, 1 if b else 2, eps) for b in range(depth))
    )


class ConvStem(nn.Module):
    """timm's ``MbConvStages``: stem, two MBConv stages, strided convolution (stride 16)."""

    def __init__(self, cfg: ViTaminVisionConfig) -> None:
        super().__init__()
        eps, dims = cfg.norm_eps, (cfg.stem_width, *cfg.conv_dims)
        self.stem = Stem(cfg.stem_width, eps)
        self.stages = nn.Sequential(
            *(_stage(dims[s], dims[s + 1], depth, eps) for s, depth in enumerate(cfg.conv_depths))
        )
        self.pool = StridedConv(dims[-1], cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@register_tower(ViTaminVisionConfig)
class ViTaminTower(TransformerTower):
    """Convolutional stem → tokens (+ learned positions), pre-LN blocks with GeGLU MLPs,
    average pool, ``ln_post`` (timm's ``fc_norm``), bias-free ``proj`` (open_clip's head)."""

    transformer: Transformer

    head_names = ("ln_post", "proj")

    def __init__(self, cfg: ViTaminVisionConfig, settings: TowerSettings) -> None:
        super().__init__()
        w, eps = cfg.width, cfg.norm_eps
        self.config = cfg
        self.image_size = cfg.image_size
        self.output_dim = settings.embed_dim
        self.conv_stem = ConvStem(cfg)
        self.pos_embed = (
            nn.Parameter(torch.empty(1, cfg.grid_size**2, w)) if cfg.pos_embed else None
        )
        mlp = partial(GeGluMlp, w, cfg.mlp_width, eps)
        self.transformer = Transformer(
            w, cfg.layers, cfg.heads, cfg.mlp_width, "gelu", eps, mlp=mlp
        )
        self.ln_post = nn.LayerNorm(w, eps=eps)
        self.proj = nn.Linear(w, settings.embed_dim, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        """timm's: convolutions normal with std ``sqrt(2 / fan_out)``, matrices and positions
        truncated normal (std 0.02), zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, std=math.sqrt(2.0 * module.groups / fan_out))
            elif isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
            if isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.trunc_normal_(block.get_parameter("attn.in_proj_weight"), std=0.02)
            nn.init.zeros_(block.get_parameter("attn.in_proj_bias"))
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """The default rule plus the position embedding (timm's)."""
        return super().no_weight_decay() | ({"pos_embed"} if self.pos_embed is not None else set())

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv_stem(pixels).flatten(2).transpose(1, 2)
        return x + self.pos_embed.to(x.dtype) if self.pos_embed is not None else x

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.ln_post(x.mean(dim=1)))

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, grid², width)``: every token after the last block (timm's
        ``forward_features``; the tower's final norm follows the pool)."""
        return self.transformer(self._tokens(inputs))

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        """timm's ``VisionTransformer.forward_intermediates`` through open_clip's
        ``TimmModel``: no prefix tokens, no final token norm (``normalize_intermediates``
        leaves them as they are, as timm's ``Identity`` norm does), features pooled from
        the same pass."""
        return TokenPass(
            self.transformer.steps(),
            self._tokens(inputs),
            kind="image",
            norm=_identity,
            pool=self._pool,
            grid=image_grid(inputs, VITAMIN_STRIDE),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._pool(self.transformer(self._tokens(pixels)))
