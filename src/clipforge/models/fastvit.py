"""FastViT "MCi" image tower: MobileCLIP's and MobileCLIP2's image encoders (timm's
``fastvit_mci0`` .. ``fastvit_mci4`` with open_clip's linear head), natively.

Module names are timm's, so open_clip's ``visual.trunk.*`` weights map by dropping
``trunk.``. The tower trains in its multi-branch form; :meth:`FastViT.reparameterize`
folds every branch into single convolutions (timm's ``reparameterize_model``) for
inference and export, and a training-form tower handed folded weights folds itself first
(:meth:`FastViT.prepare_state`), so checkpoints in either form load.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..configs.fastvit import FastViTConfig, make_divisible
from .intermediates import Intermediates, IntermediatesRequest, stage_intermediates
from .layers import LayerNorm2d
from .reparam import (
    ConvBN,
    LayerScale2d,
    MobileOneBlock,
    ReparamLargeKernelConv,
    RepConditionalPosEnc,
    RepMixer,
    reparameterize_modules,
)
from .tower import Tower, TowerSettings, register_tower


class ConvMlp(nn.Module):
    """Depthwise 7x7 convolution with BatchNorm, then a 1x1 GELU MLP."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, 7, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class Attention(nn.Module):
    """Multi-head self-attention over the positions of a feature map (bias-free qkv)."""

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(tokens).reshape(n, h * w, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, h * w, c)
        return self.proj(out).transpose(1, 2).reshape(n, c, h, w)


class RepMixerBlock(nn.Module):
    """``x = token_mixer(x); x + layer_scale(mlp(x))``."""

    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale = LayerScale2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale(self.mlp(x))


class AttentionBlock(nn.Module):
    """Pre-norm attention and convolutional MLP, each with a layer scale."""

    def __init__(self, dim: int, mlp_ratio: float, head_dim: int, norm: str) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=1e-5) if norm == "layernorm" else nn.BatchNorm2d(dim)
        self.token_mixer = Attention(dim, head_dim)
        self.layer_scale_1 = LayerScale2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_2 = LayerScale2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1(self.token_mixer(self.norm(x)))
        return x + self.layer_scale_2(self.mlp(x))


class PatchEmbed(nn.Module):
    """Stride-2 downsampling: a 7x7 large-kernel conv then a 1x1 MobileOne block."""

    def __init__(self, cin: int, cout: int, se: bool) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            ReparamLargeKernelConv(cin, cout, 7, 2, se=se), MobileOneBlock(cout, cout, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class FastViTStage(nn.Module):
    """``downsample`` (all but the first stage), ``pos_emb`` (attention stages), ``blocks``."""

    def __init__(self, cfg: FastViTConfig, index: int) -> None:
        super().__init__()
        dim, prev = cfg.embed_dims[index], cfg.embed_dims[max(index - 1, 0)]
        attention = cfg.token_mixers[index] == "attention"
        self.downsample = (
            PatchEmbed(prev, dim, cfg.se_downsamples[index]) if index else nn.Identity()
        )
        self.pos_emb = RepConditionalPosEnc(dim) if attention else nn.Identity()
        make = (
            partial(AttentionBlock, dim, cfg.mlp_ratio, cfg.head_dim, cfg.attention_norm)
            if attention else partial(RepMixerBlock, dim, cfg.mlp_ratio)
        )  # fmt: skip
        self.blocks = nn.Sequential(*(make() for _ in range(cfg.layers[index])))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_emb(self.downsample(x))
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            for block in self.blocks:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            return x
        return self.blocks(x)


class ClassifierHead(nn.Module):
    """Global average pooling and a biased linear projection (timm's head: ``head.fc``)."""

    def __init__(self, features: int, embed_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


@register_tower(FastViTConfig)
class FastViT(Tower):
    """MobileCLIP's FastViT image tower. ``blocks`` are the RepMixer and attention blocks of
    all stages; ``forward_intermediates`` returns stage outputs (as timm and open_clip do).
    LoRA has no sites here (the attention uses timm's ``qkv``/``proj`` names and the MLPs
    are convolutions): adapt the text tower."""

    head_names = ("final_conv", "head")

    def __init__(self, cfg: FastViTConfig, settings: TowerSettings) -> None:
        super().__init__()
        self.image_size = cfg.image_size
        self.output_dim = settings.embed_dim
        c0, scale = cfg.embed_dims[0], cfg.stem_scale_branch
        self.stem = nn.Sequential(
            MobileOneBlock(3, c0, 3, 2, scale_branch=scale),
            MobileOneBlock(c0, c0, 3, 2, groups=c0, scale_branch=scale),
            MobileOneBlock(c0, c0, 1, scale_branch=scale),
        )
        self.stages = nn.Sequential(*(FastViTStage(cfg, i) for i in range(len(cfg.layers))))
        last, features = cfg.embed_dims[-1], cfg.num_features
        self.final_conv = MobileOneBlock(
            last, features, 3, groups=last, se=make_divisible(features / 16, 1)
        )
        self.head = ClassifierHead(features, settings.embed_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """timm's: truncated-normal (std 0.02) weights and zero biases for the linear layers
        and the convolutional MLPs; PyTorch's defaults elsewhere."""
        mlps = [m for m in self.modules() if isinstance(m, ConvMlp)]
        linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        convs = [c for mlp in mlps for c in mlp.modules() if isinstance(c, nn.Conv2d)]
        for module in (*linears, *convs):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @property
    def stage_list(self) -> list[FastViTStage]:
        """The stages, typed (``self.stages`` iterates as plain modules)."""
        return cast(list[FastViTStage], list(self.stages))

    @property
    def blocks(self) -> list[nn.Module]:
        """The RepMixer and attention blocks of every stage, in order."""
        return [block for stage in self.stage_list for block in stage.blocks]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stage_list:
            stage.grad_checkpointing = enable

    @property
    def is_reparameterized(self) -> bool:
        """Whether the tower is in its folded, inference-time form."""
        return self.final_conv.reparam_conv is not None

    @property
    def can_reparameterize(self) -> bool:
        return not self.is_reparameterized

    def reparameterize(self) -> FastViT:
        """Fold every multi-branch module into one convolution (in place; idempotent).
        The folded tower computes the same function with its BatchNorm statistics frozen;
        it is for inference and export (re-training it trains the folded weights)."""
        reparameterize_modules(self)
        return self

    def prepare_state(self, state: Mapping[str, torch.Tensor], prefix: str) -> None:
        """Fold first when ``state`` (keys under ``prefix``) holds the folded form."""
        marker = f"{prefix}final_conv.reparam_conv.weight"
        if marker in state and not self.is_reparameterized:
            self.reparameterize()

    def _input(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.head.fc.weight.dtype)
        # oneDNN convolutions run ~10-25% faster on NHWC activations; inference only: a
        # checkpointed NHWC backward corrupted the heap on torch 2.x's CPU kernels
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem(self._input(pixels))))

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, H·W, 2·C)``: ``final_conv``'s feature map, one row per position."""
        return self._trunk(inputs).flatten(2).transpose(1, 2)

    def intermediates(self, inputs: torch.Tensor, request: IntermediatesRequest) -> Intermediates:
        """timm's ``FastVit.forward_intermediates`` through open_clip's ``TimmModel``: stage
        outputs, features ``head(final_conv(x))`` (see
        :func:`~clipforge.models.intermediates.stage_intermediates`)."""
        x = self.stem(self._input(inputs))
        return stage_intermediates(
            list(self.stages), x, request, lambda y: self.head(self.final_conv(y))
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self._trunk(pixels))

    def extra_repr(self) -> str:
        return f"reparameterized={self.is_reparameterized}"
