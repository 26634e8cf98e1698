"""timm ViT trunks open_clip wraps with a linear head (``vision.type: "timm_vit"``).

Two of open_clip's architectures use plain timm ViTs rather than CLIP's: ``vit_medium_patch16_gap_256``
(no class token, bias-free QKV, layer scale, average pool) and
``vit_relpos_medium_patch16_cls_224`` (class token, no absolute positions, a log-coordinate
relative-position MLP bias in every block, token pool). Both end with timm's final
LayerNorm, then open_clip's bias-free linear projection to ``embed_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .engine import ConfigError, bounded
from .model_config import ImageTransformerGeometry, register_vision_config
from .param_counts import layer_norm, register_parameter_counter

__all__ = ["TIMM_VIT_TRUNKS", "TimmViTConfig"]


@register_vision_config
@dataclass(frozen=True)
class TimmViTConfig(ImageTransformerGeometry):
    """A timm ``VisionTransformer`` / ``VisionTransformerRelPos`` trunk + linear head.

    ``pool``: ``"avg"`` (mean of the patch tokens) or ``"token"`` (the class token);
    ``rel_pos_dim``: hidden width of the per-block relative-position MLP (0: learned absolute
    positions instead); ``layer_scale``: per-channel gains on both residual branches.
    """

    type: ClassVar[str] = "timm_vit"
    width: int = 512
    heads: int = 8
    class_token: bool = True
    pool: Literal["avg", "token"] = "token"
    qkv_bias: bool = True
    layer_scale: bool = False
    rel_pos_dim: int = bounded(0, ge=0)
    norm_eps: float = bounded(1e-6, gt=0.0)

    def __post_init__(self) -> None:
        self.check_transformer()
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )
        if self.pool == "token" and not self.class_token:
            raise ConfigError("vision.pool 'token' needs a class token (vision.class_token)")


#: timm trunk name -> the tower open_clip builds for it
TIMM_VIT_TRUNKS: dict[str, TimmViTConfig] = {
    "vit_medium_patch16_gap_256": TimmViTConfig(
        image_size=256, class_token=False, pool="avg", qkv_bias=False, layer_scale=True
    ),
    "vit_relpos_medium_patch16_cls_224": TimmViTConfig(
        image_size=224, qkv_bias=False, layer_scale=True, rel_pos_dim=256
    ),
}


def _timm_vit_parameters(cfg: TimmViTConfig, embed_dim: int) -> int:
    """Parameters of :class:`~clipforge.models.timm_vit.TimmVisionTransformer`."""
    w, h, prefix = cfg.width, cfg.mlp_width, int(cfg.class_token)
    attention = 4 * w * w + w + (3 * w if cfg.qkv_bias else 0)
    if cfg.rel_pos_dim:
        attention += 3 * cfg.rel_pos_dim + cfg.rel_pos_dim * cfg.heads + cfg.heads
    block = 2 * layer_norm(w) + attention + 2 * w * h + h + w + (2 * w if cfg.layer_scale else 0)
    positions = 0 if cfg.rel_pos_dim else (cfg.grid_size**2 + prefix) * w
    return (
        3 * w * cfg.patch_size**2 + w  # biased patch convolution
        + prefix * w
        + positions
        + cfg.layers * block
        + layer_norm(w)  # final norm
        + w * embed_dim  # open_clip's bias-free linear head
    )  # fmt: skip


register_parameter_counter(TimmViTConfig, _timm_vit_parameters)
