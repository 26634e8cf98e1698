"""EVA-CLIP image tower configuration (``vision.type: "eva"``).

EVA-CLIP (Sun et al., 2023) image towers are ViTs with a class token, learned absolute
positions and, depending on the release, the EVA-02 additions: 2-D rotary position
embeddings on the patch tokens (``rope``), a SwiGLU MLP (``swiglu``), sub-LayerNorms inside
the MLP (``mlp_norm``) and after attention (``attn_norm``), or post-norm residual blocks
(``post_norm``, EVA-02-E). Query and value projections are biased, keys are not. The text
towers are CLIP's causal transformer (``text`` without a ``type``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .engine import ConfigError, bounded
from .model_config import ImageTransformerGeometry, register_vision_config
from .param_counts import register_parameter_counter

__all__ = ["EvaVisionConfig"]


@register_vision_config
@dataclass(frozen=True)
class EvaVisionConfig(ImageTransformerGeometry):
    """EVA / EVA-02 ViT image tower with a biased linear head to ``embed_dim``.

    ``rope_ref_grid`` is the patch grid the rotary embedding was trained for: positions of a
    different grid are rescaled onto it (EVA-02 at 336 px keeps its 224-px frequencies).
    ``norm_eps`` belongs to the tower (timm's 1e-6), not to the model-wide text setting.
    """

    type: ClassVar[str] = "eva"
    swiglu: bool = False
    mlp_norm: bool = False
    attn_norm: bool = False
    rope: bool = False
    rope_ref_grid: int = 16
    post_norm: bool = False
    norm_eps: float = bounded(1e-6, gt=0.0)

    def __post_init__(self) -> None:
        self.check_transformer(rope_ref_grid=self.rope_ref_grid)
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )
        if self.rope and self.head_width % 4:
            raise ConfigError(
                f"vision rope needs a head width divisible by 4, got {self.head_width}"
            )


def _eva_parameters(cfg: EvaVisionConfig, embed_dim: int) -> int:
    """Parameters of :class:`~clipforge.models.eva.EvaVisionTransformer` built from ``cfg``."""
    w, h = cfg.width, cfg.mlp_width
    attention = 4 * w * w + 3 * w  # fused q/k/v + out weights; q, v and out biases
    attention += 2 * w if cfg.attn_norm else 0
    fc_rows = 2 * h if cfg.swiglu else h
    mlp = fc_rows * w + fc_rows + h * w + w + (2 * h if cfg.mlp_norm else 0)
    block = 4 * w + attention + mlp  # two LayerNorms
    return (
        3 * w * cfg.patch_size**2 + w  # biased patch convolution
        + w  # class embedding
        + (cfg.grid_size**2 + 1) * w  # positional embedding
        + cfg.layers * block
        + 2 * w  # ln_post
        + w * embed_dim + embed_dim  # biased projection head
    )  # fmt: skip


register_parameter_counter(EvaVisionConfig, _eva_parameters)
