"""ViTamin image tower configuration (``vision.type: "vitamin"``): the ViTamin CLIPs
(Chen et al., CVPR 2024) that open_clip builds from timm's ``vitamin_*`` trunks.

A ViTamin trunk is a convolutional stem (two 3×3 convolutions, stride 2), two stages of
MBConv blocks (pre-LayerNorm, 1×1 expand, depthwise 3×3, 1×1 project; the first block of
each stage strides by 2), a LayerNorm + strided 3×3 convolution to the transformer width
(16× downsampling in all), then a ViT without class token whose MLPs are GeGLU with their
own LayerNorm, average pooling and a LayerNorm after the pool; open_clip adds a bias-free
linear projection. Every LayerNorm has eps 1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from .engine import ConfigError, bounded
from .model_config import ImageTransformerGeometry, register_vision_config
from .param_counts import layer_norm, register_parameter_counter

__all__ = ["VITAMIN_STRIDE", "VITAMIN_TRUNKS", "ViTaminVisionConfig", "mbconv_hidden"]

#: total downsampling of the convolutional stages (stem, two MBConv stages, strided conv)
VITAMIN_STRIDE = 16


def mbconv_hidden(channels: int, expand_ratio: float = 4.0) -> int:
    """An MBConv block's expanded width: timm's ``make_divisible(channels * 4)`` (by 8)."""
    value = channels * expand_ratio
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


@register_vision_config
@dataclass(frozen=True)
class ViTaminVisionConfig(ImageTransformerGeometry):
    """A timm ViTamin trunk with open_clip's linear head.

    ``stem_width``: the stem's channels; ``conv_dims``/``conv_depths``: the two MBConv
    stages; ``width``/``layers``/``heads``/``mlp_ratio``: the transformer (GeGLU hidden width
    ``width * mlp_ratio``); ``pos_embed``: learned absolute positions (the XL trunks have
    none, so they run at any multiple of 16 pixels); ``patch_size`` is the trunk's fixed
    stride, 16.
    """

    type: ClassVar[str] = "vitamin"
    width: int = 384
    layers: int = 14
    heads: int = 6
    mlp_ratio: float = 2.0
    stem_width: int = bounded(64, ge=1)
    conv_dims: tuple[int, ...] = (64, 128)
    conv_depths: tuple[int, ...] = (2, 4)
    pos_embed: bool = True
    norm_eps: float = bounded(1e-6, gt=0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_dims", tuple(int(d) for d in self.conv_dims))
        object.__setattr__(self, "conv_depths", tuple(int(d) for d in self.conv_depths))
        self.check_transformer()
        if len(self.conv_dims) != 2 or len(self.conv_depths) != 2:
            raise ConfigError(
                f"vision.conv_dims {list(self.conv_dims)} and vision.conv_depths "
                f"{list(self.conv_depths)} must list the two MBConv stages"
            )
        if min(self.conv_dims) < 1 or min(self.conv_depths) < 1:
            raise ConfigError("vision.conv_dims and vision.conv_depths must be positive")
        if self.patch_size != VITAMIN_STRIDE:
            raise ConfigError(
                f"vision.patch_size of a ViTamin tower is its stride {VITAMIN_STRIDE}, "
                f"got {self.patch_size}"
            )
        if self.image_size % VITAMIN_STRIDE:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of {VITAMIN_STRIDE}"
            )


def _trunk(width: int, layers: int, heads: int, stem: int, xl: bool = False) -> ViTaminVisionConfig:
    return ViTaminVisionConfig(
        width=width, layers=layers, heads=heads, stem_width=stem, conv_dims=(stem, 2 * stem),
        pos_embed=not xl,
    )  # fmt: skip


#: timm trunk name -> the tower (at timm's image size) open_clip builds for it
VITAMIN_TRUNKS: dict[str, ViTaminVisionConfig] = {
    "vitamin_small_224": _trunk(384, 14, 6, 64),
    "vitamin_base_224": _trunk(768, 14, 12, 128),
    **{
        f"vitamin_large{two}_{size}": replace(_trunk(1024, 31, 16, 160), image_size=size)
        for two in ("", "2")
        for size in (224, 256, 336, 384)
    },
    **{
        f"vitamin_xlarge_{size}": replace(_trunk(1152, 32, 16, 192, xl=True), image_size=size)
        for size in (256, 336, 384)
    },
}


def _mbconv_parameters(cin: int, cout: int) -> int:
    """One MBConv block: shortcut (1×1 expand if the widths differ), pre-norm, 1×1 expand,
    depthwise 3×3, 1×1 project (all biased)."""
    hidden = mbconv_hidden(cout)
    shortcut = cin * cout + cout if cin != cout else 0
    return shortcut + 2 * cin + cin * hidden + hidden + 10 * hidden + hidden * cout + cout


def _vitamin_parameters(cfg: ViTaminVisionConfig, embed_dim: int) -> int:
    """Parameters of :class:`~clipforge.models.vitamin.ViTaminTower` built from ``cfg``."""
    s, (d1, d2), w = cfg.stem_width, cfg.conv_dims, cfg.width
    count = 27 * s + s + layer_norm(s) + 9 * s * s + s  # stem: conv, norm, conv
    for cin, cout, depth in ((s, d1, cfg.conv_depths[0]), (d1, d2, cfg.conv_depths[1])):
        count += _mbconv_parameters(cin, cout)
        count += (depth - 1) * _mbconv_parameters(cout, cout)  # stride 1: identity shortcut
    count += layer_norm(d2) + 9 * d2 * w + w  # the strided convolution to the width
    hidden = cfg.mlp_width
    mlp = layer_norm(w) + 2 * (w * hidden + hidden) + hidden * w + w  # GeGLU with its norm
    block = 2 * layer_norm(w) + 4 * w * w + 4 * w + mlp
    positions = cfg.grid_size**2 * w if cfg.pos_embed else 0
    return count + positions + cfg.layers * block + layer_norm(w) + w * embed_dim


register_parameter_counter(ViTaminVisionConfig, _vitamin_parameters)
