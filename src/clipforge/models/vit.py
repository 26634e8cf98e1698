"""Vision transformer image tower (OpenAI CLIP layout)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..configs import ViTConfig
from .intermediates import TokenPass, image_grid
from .layers import Transformer, init_scaled_normal_
from .tower import TowerSettings, TransformerTower, register_tower


class ClassTokenViT(TransformerTower):
    """The trunk of OpenAI-layout ViTs: patchify (``conv1``), prepend a class token, add
    learned positions, ``ln_pre`` (unless ``no_ln_pre``), pre-LN ``transformer`` (with layer
    scale when ``ls_init_value``); subclasses add the head."""

    transformer: Transformer

    supports_patch_dropout = True

    def __init__(self, cfg: Any, settings: TowerSettings) -> None:
        super().__init__()
        activation, eps = settings.for_tower(cfg.activation, cfg.norm_eps)
        self.norm_eps = eps
        self.image_size = cfg.image_size
        self.output_dim = settings.embed_dim
        self.patch_dropout = 0.0
        self.conv1 = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(cfg.width))
        self.positional_embedding = nn.Parameter(torch.empty(cfg.grid_size**2 + 1, cfg.width))
        no_ln_pre = getattr(cfg, "no_ln_pre", False)
        self.ln_pre = nn.Identity() if no_ln_pre else nn.LayerNorm(cfg.width, eps=eps)
        self.transformer = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps,
            ls_init_value=getattr(cfg, "ls_init_value", None),
        )  # fmt: skip

    def init_weights(self) -> None:
        width = self.class_embedding.shape[0]
        for param in self._width_scaled_params():
            init_scaled_normal_(param, width)
        self.transformer.init_weights()

    def _width_scaled_params(self) -> list[nn.Parameter]:
        """Parameters initialised with std ``width**-0.5`` (in this order)."""
        return [self.class_embedding, self.positional_embedding]

    def _drop_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time patch dropout (FLIP): keep a random subset of patch tokens."""
        keep = max(1, int((x.shape[1] - 1) * (1.0 - self.patch_dropout)))
        scores = torch.rand(x.shape[0], x.shape[1] - 1, device=x.device)
        idx = scores.topk(keep, dim=-1).indices + 1
        patches = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return torch.cat([x[:, :1], patches], dim=1)

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch embeddings with the class token prepended and positions added, pre-LN."""
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # (N, grid², width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        if self.training and self.patch_dropout > 0:
            x = self._drop_patches(x)
        return self.ln_pre(x)


@register_tower(ViTConfig)
class VisionTransformer(ClassTokenViT):
    """Patchify, prepend a class token, pre-LN transformer, project the class token (or the
    mean of the patch tokens: ``pool_type="avg"``)."""

    head_names = ("ln_post", "proj")

    def __init__(self, cfg: ViTConfig, settings: TowerSettings) -> None:
        super().__init__(cfg, settings)
        self.pool_type, self.final_ln_after_pool = cfg.pool_type, cfg.final_ln_after_pool
        self.ln_post = nn.LayerNorm(cfg.width, eps=self.norm_eps)
        self.proj = nn.Parameter(torch.empty(cfg.width, settings.embed_dim))
        self.init_weights()

    def _width_scaled_params(self) -> list[nn.Parameter]:
        return [*super()._width_scaled_params(), self.proj]

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """open_clip's ``_pool`` + projection: class token or patch mean, ``ln_post`` before
        (per token) or after the pool (``final_ln_after_pool``)."""
        if not self.final_ln_after_pool:
            x = self.ln_post(x)
        pooled = x[:, 1:].mean(dim=1) if self.pool_type == "avg" else x[:, 0]
        if self.final_ln_after_pool:
            pooled = self.ln_post(pooled)
        return pooled @ self.proj

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, 1 + grid², width)``: the class token then every patch token, after ``ln_post``."""
        return self.ln_post(self.transformer(self._tokens(inputs)))

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        """open_clip's ``VisionTransformer.forward_intermediates``: block outputs (class token
        split off as the prefix), pooled features from the same pass."""
        return TokenPass(
            self.transformer.steps(),
            self._tokens(inputs),
            kind="image",
            norm=self.ln_post,
            pool=self._pool,
            num_prefix=1,
            grid=image_grid(inputs, self.conv1.kernel_size[0]),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self._tokens(pixels)
        if self.pool_type == "avg":
            return self._pool(self.transformer(x))
        cls_index = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        pooled = self.transformer(x, pool_index=cls_index)
        return self.ln_post(pooled) @ self.proj
