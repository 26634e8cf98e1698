"""Swin Transformer image tower configuration (``vision.type: "swin"``).

open_clip's ``swin_base_patch4_window7_224`` is timm's ``SwinTransformer`` trunk (a patch
embedding with LayerNorm, stages of window attention with a relative-position bias table,
every second block on windows shifted by half a window, 2×2 patch merging between stages, a
final LayerNorm and average pool) under its ``TimmModel`` head: a bias-free linear projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .engine import ConfigError, bounded
from .model_config import register_vision_config
from .param_counts import layer_norm, register_parameter_counter

__all__ = ["SWIN_TRUNKS", "SwinConfig"]


@register_vision_config
@dataclass(frozen=True)
class SwinConfig:
    """A timm Swin trunk: ``width`` channels after the patch embedding, doubled by every
    merge; ``depths``/``heads`` per stage; square ``window_size`` windows (a stage whose map
    is no larger than a window attends over the whole map and does not shift)."""

    type: ClassVar[str] = "swin"
    image_size: int = 224
    patch_size: int = bounded(4, ge=1)
    window_size: int = bounded(7, ge=1)
    width: int = bounded(128, ge=1)
    depths: tuple[int, ...] = (2, 2, 18, 2)
    heads: tuple[int, ...] = (4, 8, 16, 32)
    mlp_ratio: float = bounded(4.0, gt=0.0)
    norm_eps: float = bounded(1e-5, gt=0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        if len(self.depths) != len(self.heads) or not self.depths:
            raise ConfigError(
                f"vision.depths {list(self.depths)} and vision.heads {list(self.heads)} must "
                "list one entry per stage"
            )
        if min(self.depths) < 1 or min(self.heads) < 1:
            raise ConfigError("vision.depths and vision.heads must be positive")
        stride = self.patch_size * 2 ** (len(self.depths) - 1)
        if self.image_size % stride:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of the tower's "
                f"stride {stride}"
            )
        for stage, (dim, heads) in enumerate(zip(self.dims, self.heads, strict=True)):
            if dim % heads:
                raise ConfigError(f"vision stage {stage}: {dim} channels, {heads} heads")
            grid = self.stage_grid(stage)
            if grid > self.window_size and grid % self.window_size:
                raise ConfigError(
                    f"vision stage {stage}: its {grid}×{grid} map is not a multiple of "
                    f"window_size {self.window_size}"
                )

    @property
    def dims(self) -> tuple[int, ...]:
        """Channels of every stage."""
        return tuple(self.width * 2**i for i in range(len(self.depths)))

    def stage_grid(self, stage: int) -> int:
        """Side of a stage's (square) token map."""
        return self.image_size // self.patch_size // 2**stage

    def stage_window(self, stage: int) -> int:
        """The window side a stage attends over (the whole map when it is smaller)."""
        return min(self.window_size, self.stage_grid(stage))


#: timm trunk name -> the tower open_clip builds for it
SWIN_TRUNKS: dict[str, SwinConfig] = {"swin_base_patch4_window7_224": SwinConfig()}


def _swin_parameters(cfg: SwinConfig, embed_dim: int) -> int:
    """Parameters of :class:`~clipforge.models.swin.SwinTower` built from ``cfg``."""
    dims = cfg.dims
    count = 3 * dims[0] * cfg.patch_size**2 + dims[0] + layer_norm(dims[0])  # patch embed
    for stage, (depth, dim, heads) in enumerate(zip(cfg.depths, dims, cfg.heads, strict=True)):
        if stage:
            count += layer_norm(4 * dims[stage - 1]) + 4 * dims[stage - 1] * dim  # merging
        hidden = int(dim * cfg.mlp_ratio)
        table = (2 * cfg.stage_window(stage) - 1) ** 2 * heads
        attention = 3 * dim * dim + 3 * dim + dim * dim + dim + table
        count += depth * (2 * layer_norm(dim) + attention + 2 * dim * hidden + hidden + dim)
    return count + layer_norm(dims[-1]) + dims[-1] * embed_dim  # final norm, linear head


register_parameter_counter(SwinConfig, _swin_parameters)
