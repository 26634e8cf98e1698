"""Parameter counts computed from an architecture's config, without building (or importing)
torch: ``clipforge models`` answers instantly. ``tests/test_hardening_zoo.py`` checks every
registered architecture against ``CLIP.num_parameters()`` of a model built on ``meta``.

Each tower config class registers its formula (:func:`register_parameter_counter`) in
:data:`PARAMETER_COUNTERS`, keyed by the class's name. A third-party tower without one is
counted by :func:`clipforge.models.count_parameters`, which builds the model on the ``meta``
device (exact, but it imports torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry
from .model_config import ClipConfig, ConfigError, ResNetConfig, TextConfig, ViTConfig

__all__ = [
    "PARAMETER_COUNTERS",
    "count_parameters",
    "has_parameter_formula",
    "register_parameter_counter",
]

ParameterCounter = Callable[[Any, int], int]
#: tower config class name -> ``count(config, embed_dim)``
PARAMETER_COUNTERS: Registry[ParameterCounter] = Registry("parameter counter")


def register_parameter_counter(
    config_class: type, count: ParameterCounter, *, replace: bool = False
) -> None:
    """Declare how many parameters the tower of ``config_class`` configs has."""
    PARAMETER_COUNTERS.register(config_class.__name__, count, replace=replace)


def has_parameter_formula(cfg: ClipConfig) -> bool:
    """Whether both towers (and the decoder, if any) of ``cfg`` have a registered formula."""
    return all(type(t).__name__ in PARAMETER_COUNTERS for t in _parts(cfg))


def _parts(cfg: ClipConfig) -> list[Any]:
    return [cfg.vision, cfg.text] + ([cfg.decoder] if cfg.decoder is not None else [])


def layer_norm(width: int) -> int:
    return 2 * width


def transformer(width: int, layers: int, mlp_width: int) -> int:
    """``layers`` pre-LN blocks: two LayerNorms, fused-QKV attention, two-layer MLP."""
    attention = 4 * width * width + 4 * width
    mlp = 2 * width * mlp_width + mlp_width + width
    return layers * (2 * layer_norm(width) + attention + mlp)


def _vit(cfg: ViTConfig, embed_dim: int) -> int:
    w = cfg.width
    return (
        3 * w * cfg.patch_size**2  # conv1 (no bias)
        + w  # class embedding
        + (cfg.grid_size**2 + 1) * w  # positional embedding
        + (1 + (not cfg.no_ln_pre)) * layer_norm(w)  # ln_post (+ ln_pre)
        + transformer(w, cfg.layers, cfg.mlp_width)
        + (0 if cfg.ls_init_value is None else cfg.layers * 2 * w)  # layer-scale gains
        + w * embed_dim  # proj
    )


def _bottleneck(inplanes: int, planes: int, stride: int) -> int:
    out = 4 * planes
    count = inplanes * planes + 9 * planes * planes + planes * out  # three convolutions
    count += 2 * planes + 2 * planes + 2 * out  # three BatchNorms (weight, bias)
    if stride > 1 or inplanes != out:
        count += inplanes * out + 2 * out  # downsample convolution + BatchNorm
    return count


def _resnet(cfg: ResNetConfig, embed_dim: int) -> int:
    w, half = cfg.width, cfg.width // 2
    count = 3 * half * 9 + half * half * 9 + half * w * 9 + 2 * (half + half + w)  # stem
    inplanes = w
    for stage, blocks in enumerate(cfg.layers):
        planes = w * 2**stage
        for block in range(blocks):
            count += _bottleneck(inplanes, planes, 2 if stage and not block else 1)
            inplanes = 4 * planes
    c = w * 32
    spatial = cfg.image_size // 32
    return count + (spatial**2 + 1) * c + 3 * (c * c + c) + c * embed_dim + embed_dim


def _text(cfg: TextConfig, embed_dim: int) -> int:
    w = cfg.width
    return (
        cfg.vocab_size * w
        + cfg.context_length * w
        + transformer(w, cfg.layers, cfg.mlp_width)
        + layer_norm(w)
        + w * embed_dim
    )


def count_parameters(cfg: ClipConfig) -> dict[str, int]:
    """``{"image", "text", "total"}`` (and ``"decoder"`` for a model with a text decoder,
    CoCa) exactly as ``CLIP(cfg).num_parameters()`` reports."""
    if not has_parameter_formula(cfg):
        missing = [type(t).__name__ for t in _parts(cfg)]
        raise ConfigError(
            f"no parameter formula for {' / '.join(missing)}: register one with "
            "register_parameter_counter, or count with clipforge.models.count_parameters"
        )
    vision = PARAMETER_COUNTERS.get(type(cfg.vision).__name__)
    text = PARAMETER_COUNTERS.get(type(cfg.text).__name__)
    image, txt = vision(cfg.vision, cfg.embed_dim), text(cfg.text, cfg.embed_dim)
    scalars = 1 + (cfg.init_logit_bias is not None)  # logit_scale (+ logit_bias)
    counts = {"image": image, "text": txt, "total": image + txt + scalars}
    if cfg.decoder is not None:
        counts["decoder"] = PARAMETER_COUNTERS.get(type(cfg.decoder).__name__)(cfg.decoder, 0)
        counts["total"] += counts["decoder"]
    return counts


register_parameter_counter(ViTConfig, _vit)
register_parameter_counter(ResNetConfig, _resnet)
register_parameter_counter(TextConfig, _text)
