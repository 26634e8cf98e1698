"""The ViT image towers of MobileCLIP-B, MobileCLIP2-B and MobileCLIP2-L-14: timm's
``VisionTransformer`` (``vit_base_mci_224`` with its convolutional stem, and
``vit_large_patch14_clip_224``) under open_clip's ``TimmModel``, natively.

Stem, class token, positions, norms and head keep timm's names; the blocks are clipforge's
(``transformer.resblocks.*``), so LoRA, checkpointing and the pooled last block apply;
:mod:`clipforge.checkpoints.formats.mobileclip_keys` renames them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..configs.fastvit import MobileCLIPViTConfig
from .intermediates import TokenPass, image_grid
from .layers import Transformer
from .tower import TowerSettings, TransformerTower, register_tower


class ConvNormAct(nn.Module):
    """timm's ``ConvNormAct``: a convolution, then BatchNorm and GELU (``bn``, optional)."""

    def __init__(self, cin: int, cout: int, k: int, norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=k, bias=not norm)
        self.bn = nn.BatchNorm2d(cout) if norm else None
        self.act = nn.GELU() if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act(self.bn(x)) if self.bn is not None else x


class ConvStem(nn.Module):
    """MCi's stem: 4x4/4 and 2x2/2 convolutions with BatchNorm and GELU to ``width / 4``
    channels, then a biased 2x2/2 convolution to ``width`` (``backbone.{0,1,2}``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        c = width // 4
        self.backbone = nn.Sequential(
            ConvNormAct(3, c, 4, True), ConvNormAct(c, c, 2, True), ConvNormAct(c, width, 2, False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


class PatchStem(nn.Module):
    """One ``patch_size`` convolution (``proj``), biased unless the tower pre-normalises."""

    def __init__(self, width: int, patch_size: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@register_tower(MobileCLIPViTConfig)
class MobileCLIPViT(TransformerTower):
    """Stem, class token (``cls_token``) and positions (``pos_embed``), optional
    ``norm_pre``, pre-LN blocks, ``norm``, class-token pooling, biased linear ``head``."""

    transformer: Transformer

    head_names = ("norm", "head")

    def __init__(self, cfg: MobileCLIPViTConfig, settings: TowerSettings) -> None:
        super().__init__()
        w, eps = cfg.width, cfg.norm_eps
        self.image_size, self.patch_size = cfg.image_size, cfg.patch_size
        self.output_dim = settings.embed_dim
        self.class_pos = cfg.class_pos
        self.patch_embed: nn.Module = (
            ConvStem(w) if cfg.stem == "conv" else PatchStem(w, cfg.patch_size, not cfg.pre_norm)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.grid_size**2 + cfg.class_pos, w))
        self.norm_pre = nn.LayerNorm(w, eps=eps) if cfg.pre_norm else nn.Identity()
        activation = settings.activation
        self.transformer = Transformer(w, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps)
        self.norm = nn.LayerNorm(w, eps=eps)
        self.head = nn.Linear(w, settings.embed_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """timm's: positions std 0.02, class token 1e-6, truncated-normal linear layers."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.transformer.init_weights()
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the class token and positions (timm's ``_pos_embed``), pre-norm."""
        x = self.patch_embed(pixels.to(self.head.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)
        pos = self.pos_embed.to(x.dtype)
        x = torch.cat([cls, x], dim=1) + pos if self.class_pos else torch.cat([cls, x + pos], 1)
        return self.norm_pre(x)

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, 1 + grid², width)``: the class token then every patch token, after ``norm``."""
        return self.norm(self.transformer(self._tokens(inputs)))

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        """timm's ``VisionTransformer.forward_intermediates`` through open_clip's
        ``TimmModel``: block outputs (class token as the prefix), features
        ``head(norm(x)[:, 0])`` from the same pass."""
        return TokenPass(
            self.transformer.steps(),
            self._tokens(inputs),
            kind="image",
            norm=self.norm,
            pool=lambda x: self.head(self.norm(x[:, 0])),
            num_prefix=1,
            grid=image_grid(inputs, self.patch_size),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self._tokens(pixels)
        cls_index = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.head(self.norm(self.transformer(x, pool_index=cls_index)))
