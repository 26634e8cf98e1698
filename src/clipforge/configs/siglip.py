"""SigLIP tower configurations (``vision.type: "siglip_vit"``, ``text.type: "siglip_text"``).

SigLIP (Zhai et al., 2023) pairs a class-token-free ViT pooled by a multi-head attention
head ("MAP") with a bidirectional text transformer pooled at its last position. Both towers
may use their own activation (SigLIP 2 checkpoints use tanh-GELU in the text tower only);
``activation=None`` means the model-wide one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .engine import ConfigError
from .model_config import (
    ImageTransformerGeometry,
    TextTransformerGeometry,
    TowerActivation,
    register_text_config,
    register_vision_config,
)
from .param_counts import layer_norm, register_parameter_counter, transformer


@register_vision_config
@dataclass(frozen=True)
class SigLipVisionConfig(ImageTransformerGeometry):
    """SigLIP image tower: biased patch conv, no class token, pre-LN ViT, MAP head.

    ``image_size`` need not be a multiple of ``patch_size``: the patch convolution drops the
    remainder (SO400M/14 at 384 px sees a 27×27 grid, as big_vision and timm do).
    ``proj`` adds a bias-free linear projection to ``embed_dim`` after the head, for towers
    narrower or wider than the embedding (no release has one: open_clip cannot build it).
    """

    type: ClassVar[str] = "siglip_vit"
    activation: TowerActivation | None = None
    proj: bool = False

    def __post_init__(self) -> None:
        self.check_transformer()
        if self.patch_size > self.image_size:
            raise ConfigError(
                f"vision.patch_size {self.patch_size} exceeds image_size {self.image_size}"
            )


@register_vision_config
@dataclass(frozen=True)
class SigLipNaFlexVisionConfig(SigLipVisionConfig):
    """SigLIP 2 NaFlex image tower: the SigLIP tower fed variable-size patch sequences.

    Images keep their aspect ratio and are cut into at most ``max_num_patches`` patches
    (the preprocessing's budget); the learned positions, a square grid of
    ``(image_size // patch_size)²`` entries (transformers' ``num_patches``), are resized to
    each image's patch grid with bilinear antialiased interpolation, and padding patches are
    masked out of every attention. ``image_size`` is the grid's side in pixels (256 for
    transformers' default 16×16 grid of 16-pixel patches).
    """

    type: ClassVar[str] = "siglip_naflex"
    image_size: int = 256


@register_text_config
@dataclass(frozen=True)
class SigLipTextConfig(TextTransformerGeometry):
    """SigLIP text tower: bidirectional transformer, pooled at the last position.

    Sequences are always padded to ``context_length`` (the pooled position is the last one,
    so padding is part of the input). ``proj`` is ``"linear"`` (a biased linear head to
    ``embed_dim``) or ``"none"`` (the width is the embedding width).
    """

    type: ClassVar[str] = "siglip_text"
    context_length: int = 64
    vocab_size: int = 32000
    width: int = 768
    heads: int = 12
    activation: TowerActivation | None = None
    proj: Literal["linear", "none"] = "linear"

    def __post_init__(self) -> None:
        self.check_transformer()


def _count_vision(cfg: SigLipVisionConfig, embed_dim: int) -> int:
    w = cfg.width
    head = w + 4 * (w * w + w) + layer_norm(w) + 2 * w * cfg.mlp_width + cfg.mlp_width + w
    return (
        3 * w * cfg.patch_size**2 + w  # biased patch convolution
        + cfg.grid_size**2 * w  # positional embedding (no class token)
        + transformer(w, cfg.layers, cfg.mlp_width)
        + layer_norm(w)  # ln_post
        + head  # latent, q/kv/out projections, LayerNorm, MLP
        + (w * embed_dim if cfg.proj else 0)
    )  # fmt: skip


def _count_text(cfg: SigLipTextConfig, embed_dim: int) -> int:
    w = cfg.width
    return (
        (cfg.vocab_size + cfg.context_length) * w
        + transformer(w, cfg.layers, cfg.mlp_width)
        + layer_norm(w)
        + (w * embed_dim + embed_dim if cfg.proj == "linear" else 0)
    )


register_parameter_counter(SigLipVisionConfig, _count_vision)
register_parameter_counter(SigLipNaFlexVisionConfig, _count_vision)
register_parameter_counter(SigLipTextConfig, _count_text)
