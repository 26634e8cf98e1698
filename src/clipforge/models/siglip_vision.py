"""SigLIP image tower: a class-token-free ViT pooled by a multi-head attention head ("MAP")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import SigLipVisionConfig
from .layers import Mlp, Transformer, init_scaled_normal_
from .tower import PatchTransformerTower, TowerSettings, register_tower


class AttentionPool(nn.Module):
    """Multi-head attention pooling with a learned query (big_vision's ``MAPHead``).

    One latent query attends over all tokens (``q_proj`` on the latent, ``kv_proj`` on the
    tokens), the result goes through ``out_proj`` and then a pre-LN MLP residual:
    ``y = attn(latent, x); y + mlp(ln(y))``.
    """

    def __init__(self, width: int, heads: int, mlp_width: int, activation: str, eps: float):
        super().__init__()
        self.heads = heads
        self.latent = nn.Parameter(torch.empty(1, width))
        self.q_proj = nn.Linear(width, width)
        self.kv_proj = nn.Linear(width, 2 * width)
        self.out_proj = nn.Linear(width, width)
        self.ln = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, mlp_width, activation)
        init_scaled_normal_(self.latent, width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, L, width) -> (N, width)``; ``key_mask`` (boolean, broadcastable to
        ``(N, 1, 1, L)``, True = attend) leaves padding tokens out."""
        batch, length, width = x.shape
        head_dim = width // self.heads
        q = self.q_proj(self.latent.to(x.dtype)).view(1, self.heads, 1, head_dim)
        kv = self.kv_proj(x).view(batch, length, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q.expand(batch, -1, -1, -1), kv[0], kv[1], attn_mask=key_mask
        )
        y = self.out_proj(out.reshape(batch, width))
        return y + self.mlp(self.ln(y))


@register_tower(SigLipVisionConfig)
class SigLipVisionTransformer(PatchTransformerTower):
    """Biased patch conv + learned positions, pre-LN transformer, ``ln_post``, MAP head.

    Parameters: ``patch_embed``, ``positional_embedding`` (grid², width),
    ``transformer.resblocks.*`` (clipforge's blocks, so LoRA targets apply), ``ln_post``,
    ``attn_pool.*`` and, when the config asks for it, ``proj``.
    """

    transformer: Transformer

    head_names = ("ln_post", "attn_pool", "proj")
    supports_patch_dropout = True

    def __init__(self, cfg: SigLipVisionConfig, settings: TowerSettings) -> None:
        super().__init__()
        activation, eps = cfg.activation or settings.activation, settings.norm_eps
        if not cfg.proj and cfg.width != settings.embed_dim:
            raise ValueError(
                f"SigLIP vision width {cfg.width} differs from embed_dim {settings.embed_dim}: "
                "set vision.proj=true to project"
            )
        self.image_size, self.patch_size = cfg.image_size, cfg.patch_size
        self.output_dim = settings.embed_dim
        self.patch_dropout = 0.0
        self.patch_embed = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.grid_size**2, cfg.width))
        self.transformer = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps
        )
        self.ln_post = nn.LayerNorm(cfg.width, eps=eps)
        self.attn_pool = AttentionPool(cfg.width, cfg.heads, cfg.mlp_width, activation, eps)
        self.proj = nn.Linear(cfg.width, settings.embed_dim, bias=False) if cfg.proj else None
        nn.init.normal_(self.positional_embedding, std=0.02)
        self.transformer.init_weights()

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch embeddings plus positions; a random subset of them in training with dropout."""
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)  # (N, grid², width)
        x = x + self.positional_embedding.to(x.dtype)
        if self.training and self.patch_dropout > 0:
            keep = max(1, int(x.shape[1] * (1.0 - self.patch_dropout)))
            idx = torch.rand(x.shape[0], x.shape[1], device=x.device).topk(keep, dim=-1).indices
            x = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return x

    def _block_inputs(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[()]]:
        return self._tokens(pixels), ()

    def _pool(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.attn_pool(self.ln_post(x), key_mask)
        return self.proj(pooled) if self.proj is not None else pooled
