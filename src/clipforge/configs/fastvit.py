"""MobileCLIP image tower configurations: the FastViT "MCi" towers (``vision.type:
"fastvit"``; timm's ``fastvit_mci0`` .. ``fastvit_mci4``) and the ViT towers of the -B and
-L-14 releases (``vision.type: "mobileclip_vit"``).

A FastViT is a convolutional stem (three MobileOne blocks, stride 4) and stages of
``RepMixer`` blocks (re-parameterisable depthwise token mixing) followed by stages of
attention blocks (with a 7x7 conditional positional encoding); every stage after the first
halves the resolution with a large-kernel patch embedding. A MobileOne ``final_conv``
doubles the channels (with squeeze-excite), then global average pooling and a biased linear
head give the ``embed_dim`` features. Training-time blocks have parallel branches that
:meth:`~clipforge.models.fastvit.FastViT.reparameterize` folds into single convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .engine import ConfigError, bounded
from .model_config import ImageTransformerGeometry, register_vision_config
from .param_counts import layer_norm, register_parameter_counter, transformer

__all__ = ["FastViTConfig", "MobileCLIPViTConfig", "make_divisible"]

TokenMixer = Literal["repmixer", "attention"]


@register_vision_config
@dataclass(frozen=True)
class FastViTConfig:
    """One FastViT MCi image tower (the defaults are MobileCLIP2-S0's ``fastvit_mci0``).

    Per stage: ``layers`` (blocks), ``embed_dims`` (channels), ``token_mixers`` and
    ``se_downsamples`` (squeeze-excite in the stage's patch embedding). Attention stages
    carry a 7x7 conditional positional encoding and normalise with ``attention_norm``
    (``batchnorm``; MCi3/4 use a channel ``layernorm``, eps 1e-5). ``stem_scale_branch``:
    the stem's 1x1 scale branches (MCi3/4 have none).
    """

    type: ClassVar[str] = "fastvit"
    image_size: int = bounded(256, ge=32)
    layers: tuple[int, ...] = (2, 6, 10, 2)
    embed_dims: tuple[int, ...] = (64, 128, 256, 512)
    mlp_ratio: float = bounded(3.0, gt=0.0)
    token_mixers: tuple[TokenMixer, ...] = ("repmixer", "repmixer", "repmixer", "attention")
    se_downsamples: tuple[bool, ...] = (False, False, True, True)
    attention_norm: Literal["batchnorm", "layernorm"] = "batchnorm"
    stem_scale_branch: bool = True
    head_dim: int = bounded(32, ge=1)

    def __post_init__(self) -> None:
        for name in ("layers", "embed_dims", "token_mixers", "se_downsamples"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        stages = len(self.layers)
        for name in ("embed_dims", "token_mixers", "se_downsamples"):
            if len(getattr(self, name)) != stages:
                raise ConfigError(
                    f"vision.{name} lists {len(getattr(self, name))} stages, layers lists {stages}"
                )
        if not stages or min(self.layers) < 1 or min(self.embed_dims) < 1:
            raise ConfigError("vision.layers and vision.embed_dims must be positive, per stage")
        for i, (dim, mixer) in enumerate(zip(self.embed_dims, self.token_mixers, strict=True)):
            if mixer == "attention" and dim % self.head_dim:
                raise ConfigError(
                    f"vision.embed_dims[{i}] {dim} is not divisible by head_dim {self.head_dim}"
                )
            if i and dim % self.embed_dims[i - 1]:
                raise ConfigError(
                    f"vision.embed_dims[{i}] {dim} is not a multiple of the previous stage's "
                    f"{self.embed_dims[i - 1]} (the downsampling convolution is grouped)"
                )

    @property
    def reduction(self) -> int:
        """Total stride: 4 in the stem, 2 per later stage."""
        return 4 * 2 ** (len(self.layers) - 1)

    @property
    def num_features(self) -> int:
        """Channels after ``final_conv`` (twice the last stage's), the head's input."""
        return 2 * self.embed_dims[-1]


def make_divisible(value: float, divisor: int) -> int:
    """timm's ``make_divisible`` with ``round_limit=0`` (squeeze-excite reduction widths)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


# ----------------------------------------------------------------------------- counts
def _bn(c: int) -> int:
    return 2 * c  # weight and bias (running statistics are buffers)


def _se(c: int, reduced: int) -> int:
    return 2 * c * reduced + reduced + c  # two biased 1x1 convolutions


def _mobileone(cin: int, cout: int, k: int, groups: int, *, identity: bool, scale: bool,
               branches: int = 1, se: int = 0) -> int:  # fmt: skip
    per_conv = cout * (cin // groups)
    count = branches * (per_conv * k * k + _bn(cout))
    count += (per_conv + _bn(cout)) if scale and k > 1 else 0
    count += _bn(cin) if identity else 0
    return count + (_se(cout, se) if se else 0)


def _downsample(cin: int, cout: int, se: bool) -> int:
    large = cout * 49 + _bn(cout) + cout * 9 + _bn(cout)  # 7x7 + 3x3 depthwise-grouped
    large += _se(cout, make_divisible(cout * 0.25, 8)) if se else 0
    return large + _mobileone(cout, cout, 1, 1, identity=True, scale=False)


def _block(cfg: FastViTConfig, dim: int, mixer: str) -> int:
    hidden = int(dim * cfg.mlp_ratio)
    mlp = dim * 49 + _bn(dim) + dim * hidden + hidden + hidden * dim + dim
    if mixer == "repmixer":
        mixing = _bn(dim) + _mobileone(dim, dim, 3, dim, identity=True, scale=True) + dim
        return mixing + mlp + dim  # + the MLP's layer scale
    norm = 2 * dim  # BatchNorm or LayerNorm: weight and bias
    return norm + 3 * dim * dim + dim * dim + dim + mlp + 2 * dim  # qkv, proj, 2 layer scales


def _fastvit_parameters(cfg: FastViTConfig, embed_dim: int) -> int:
    """Parameters of :class:`~clipforge.models.fastvit.FastViT` in its training form."""
    c0, scale = cfg.embed_dims[0], cfg.stem_scale_branch
    count = _mobileone(3, c0, 3, 1, identity=False, scale=scale)
    count += _mobileone(c0, c0, 3, c0, identity=False, scale=scale)
    count += _mobileone(c0, c0, 1, 1, identity=True, scale=scale)
    prev = c0
    for i, (depth, dim) in enumerate(zip(cfg.layers, cfg.embed_dims, strict=True)):
        if i:
            count += _downsample(prev, dim, cfg.se_downsamples[i])
        if cfg.token_mixers[i] == "attention":
            count += dim * 49 + dim  # conditional positional encoding
        count += depth * _block(cfg, dim, cfg.token_mixers[i])
        prev = dim
    final = cfg.num_features
    count += _mobileone(prev, final, 3, prev, identity=False, scale=True,
                        se=make_divisible(final / 16, 1))  # fmt: skip
    return count + final * embed_dim + embed_dim


register_parameter_counter(FastViTConfig, _fastvit_parameters)


@register_vision_config
@dataclass(frozen=True)
class MobileCLIPViTConfig(ImageTransformerGeometry):
    """The ViT image towers of MobileCLIP-B / MobileCLIP2-B (timm's ``vit_base_mci_224``)
    and MobileCLIP2-L-14 (``vit_large_patch14_clip_224``): timm's ``VisionTransformer`` with
    a class token pooled by a biased linear ``head``.

    ``stem``: ``"conv"`` (MCi's three-convolution stem, 4·2·2 = 16 px patches, BatchNorm and
    GELU) or ``"patch"`` (one ``patch_size`` convolution, biased unless ``pre_norm``).
    ``pre_norm``: a LayerNorm before the blocks (CLIP-style). ``class_pos``: the position
    table covers the class token too (``False``: timm's ``no_embed_class``).
    """

    type: ClassVar[str] = "mobileclip_vit"
    stem: Literal["conv", "patch"] = "conv"
    pre_norm: bool = False
    class_pos: bool = False
    norm_eps: float = bounded(1e-6, gt=0.0)

    def __post_init__(self) -> None:
        self.check_transformer()
        if self.stem == "conv" and (self.patch_size != 16 or self.width % 4):
            raise ConfigError("vision.stem 'conv' makes 16-px patches of a width divisible by 4")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )


def _mobileclip_vit_parameters(cfg: MobileCLIPViTConfig, embed_dim: int) -> int:
    """Parameters of :class:`~clipforge.models.mobileclip_vit.MobileCLIPViT`."""
    w = cfg.width
    if cfg.stem == "conv":
        c = w // 4
        stem = 3 * c * 16 + _bn(c) + c * c * 4 + _bn(c) + c * w * 4 + w
    else:
        stem = 3 * w * cfg.patch_size**2 + (0 if cfg.pre_norm else w)
    positions = (cfg.grid_size**2 + cfg.class_pos) * w
    norms = layer_norm(w) * (1 + cfg.pre_norm)
    blocks = transformer(w, cfg.layers, cfg.mlp_width)
    return stem + w + positions + norms + blocks + w * embed_dim + embed_dim


register_parameter_counter(MobileCLIPViTConfig, _mobileclip_vit_parameters)
