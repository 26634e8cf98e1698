"""Perception Encoder image tower configuration (``vision.type: "pe"``): Meta's PE-Core.

PE-Core image towers (Bolya et al., 2025; timm ``vit_pe_core_*``, which open_clip wraps)
are ViTs with a bias-free patch convolution, an optional class token, learned absolute
positions plus 2-D rotary positions on the patch tokens (grid coordinates offset by
``rope_offset``, x before y), a LayerNorm before and after the blocks, attention pooling
("MAP": one learned query over every token) and a biased linear head to ``embed_dim``. The
text towers are CLIP's causal transformer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .engine import ConfigError, bounded
from .model_config import ImageTransformerGeometry, register_vision_config
from .param_counts import layer_norm, register_parameter_counter, transformer

__all__ = ["PE_TRUNKS", "PerceptionVisionConfig"]


@register_vision_config
@dataclass(frozen=True)
class PerceptionVisionConfig(ImageTransformerGeometry):
    """A PE-Core ViT. ``rope_ref_grid``: the patch grid the rotary frequencies were trained
    for (other grids are rescaled onto it); ``pool_heads`` / ``pool_mlp_ratio``: the
    attention pool's heads and MLP ratio; ``norm_eps``: every LayerNorm's epsilon."""

    type: ClassVar[str] = "pe"
    class_token: bool = True
    rope_ref_grid: int = 14
    rope_offset: float = 1.0
    pool_heads: int = 8
    pool_mlp_ratio: float = bounded(4.0, gt=0.0)
    norm_eps: float = bounded(1e-5, gt=0.0)

    def __post_init__(self) -> None:
        self.check_transformer(rope_ref_grid=self.rope_ref_grid, pool_heads=self.pool_heads)
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )
        if self.head_width % 4:
            raise ConfigError(
                f"vision rope needs a head width divisible by 4, got {self.head_width}"
            )
        if self.width % self.pool_heads:
            raise ConfigError(
                f"vision.width {self.width} is not divisible by pool_heads {self.pool_heads}"
            )


#: timm trunk name -> the PE-Core tower open_clip builds for it
PE_TRUNKS: dict[str, PerceptionVisionConfig] = {
    "vit_pe_core_tiny_patch16_384": PerceptionVisionConfig(
        image_size=384, patch_size=16, width=192, layers=12, heads=3, rope_ref_grid=24
    ),
    "vit_pe_core_small_patch16_384": PerceptionVisionConfig(
        image_size=384, patch_size=16, width=384, layers=12, heads=6, rope_ref_grid=24
    ),
    "vit_pe_core_base_patch16_224": PerceptionVisionConfig(
        image_size=224, patch_size=16, width=768, layers=12, heads=12, rope_ref_grid=14
    ),
    "vit_pe_core_large_patch14_336": PerceptionVisionConfig(
        image_size=336, patch_size=14, width=1024, layers=24, heads=16, rope_ref_grid=24
    ),
    "vit_pe_core_gigantic_patch14_448": PerceptionVisionConfig(
        image_size=448, patch_size=14, width=1536, layers=50, heads=16, mlp_ratio=8960 / 1536,
        class_token=False, rope_ref_grid=32, rope_offset=0.0,
    ),
}  # fmt: skip


def _pe_parameters(cfg: PerceptionVisionConfig, embed_dim: int) -> int:
    """Parameters of :class:`~clipforge.models.pe.PerceptionVisionTransformer`."""
    w, prefix = cfg.width, int(cfg.class_token)
    pool_hidden = int(w * cfg.pool_mlp_ratio)
    pool = w + 4 * w * w + 4 * w + layer_norm(w) + 2 * w * pool_hidden + pool_hidden + w
    return (
        3 * w * cfg.patch_size**2  # bias-free patch convolution
        + prefix * w  # class embedding
        + (cfg.grid_size**2 + prefix) * w  # positional embedding
        + 2 * layer_norm(w)  # ln_pre, ln_post
        + transformer(w, cfg.layers, cfg.mlp_width)
        + pool  # latent, q / kv / out projections, norm, MLP
        + w * embed_dim + embed_dim  # biased head
    )  # fmt: skip


register_parameter_counter(PerceptionVisionConfig, _pe_parameters)
