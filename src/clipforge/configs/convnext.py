"""ConvNeXt image tower configuration (``vision.type: "convnext"``): LAION's ConvNeXt CLIPs.

open_clip builds these towers as a timm ``ConvNeXt`` trunk (patch stem, four stages of
depthwise-conv blocks with layer scale, average pool + LayerNorm head) followed by its
``TimmModel`` head: a bias-free ``linear`` projection, or an ``mlp`` (fc1 with bias, GELU,
fc2 without) to ``embed_dim``. The text towers are CLIP's causal transformer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .engine import ConfigError, bounded
from .model_config import register_vision_config
from .param_counts import register_parameter_counter

__all__ = ["CONVNEXT_TRUNKS", "ConvNextVisionConfig", "TimmHead"]

#: open_clip's ``timm_proj`` heads: a bias-free linear map, or a 2-layer MLP (hidden 2 × embed)
TimmHead = Literal["linear", "mlp"]


@register_vision_config
@dataclass(frozen=True)
class ConvNextVisionConfig:
    """A timm ConvNeXt trunk (``depths``/``dims`` per stage) with open_clip's projection head.

    ``norm_eps`` is timm's LayerNorm epsilon (1e-6; ``convnext_xxlarge`` uses 1e-5);
    ``head`` is open_clip's ``timm_proj``.
    """

    type: ClassVar[str] = "convnext"
    image_size: int = 224
    depths: tuple[int, ...] = (3, 3, 27, 3)
    dims: tuple[int, ...] = (128, 256, 512, 1024)
    head: TimmHead = "linear"
    patch_size: int = bounded(4, ge=1)
    kernel_size: int = bounded(7, ge=1)
    mlp_ratio: float = bounded(4.0, gt=0.0)
    norm_eps: float = bounded(1e-6, gt=0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        if len(self.depths) != len(self.dims) or not self.depths:
            raise ConfigError(
                f"vision.depths {list(self.depths)} and vision.dims {list(self.dims)} must "
                "list one entry per stage"
            )
        if min(self.depths) < 1 or min(self.dims) < 1:
            raise ConfigError("vision.depths and vision.dims must be positive")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"vision.kernel_size must be odd, got {self.kernel_size}")
        stride = self.patch_size * 2 ** (len(self.dims) - 1)
        if self.image_size % stride:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of the tower's "
                f"stride {stride}"
            )

    @property
    def width(self) -> int:
        """Channels of the last stage (the pooled feature width)."""
        return self.dims[-1]


#: timm trunk name -> (depths, dims, norm_eps): the ConvNeXt trunks open_clip configs name
CONVNEXT_TRUNKS: dict[str, tuple[tuple[int, ...], tuple[int, ...], float]] = {
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768), 1e-6),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768), 1e-6),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024), 1e-6),
    "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536), 1e-6),
    "convnext_xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048), 1e-6),
    "convnext_xxlarge": ((3, 4, 30, 3), (384, 768, 1536, 3072), 1e-5),
}


def _convnext_parameters(cfg: ConvNextVisionConfig, embed_dim: int) -> int:
    """Parameters of :class:`~clipforge.models.convnext.ConvNextTower` built from ``cfg``."""
    dims, k = cfg.dims, cfg.kernel_size
    count = 3 * dims[0] * cfg.patch_size**2 + dims[0] + 2 * dims[0]  # stem conv + norm
    for stage, (depth, dim) in enumerate(zip(cfg.depths, dims, strict=True)):
        if stage:
            count += 2 * dims[stage - 1] + dims[stage - 1] * dim * 4 + dim  # norm + 2x2 conv
        hidden = int(cfg.mlp_ratio * dim)
        block = dim * k * k + dim + 2 * dim + 2 * dim * hidden + hidden + dim + dim
        count += depth * block
    count += 2 * dims[-1]  # the head's LayerNorm
    if cfg.head == "linear":
        return count + dims[-1] * embed_dim
    hidden = 2 * embed_dim
    return count + dims[-1] * hidden + hidden + hidden * embed_dim


register_parameter_counter(ConvNextVisionConfig, _convnext_parameters)
