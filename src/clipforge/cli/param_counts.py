"""Parameter counts computed from an architecture's config, without building (or importing)
torch: ``clipforge models`` answers instantly. ``tests/test_hardening_zoo.py`` checks every
registered architecture against ``CLIP.num_parameters()`` of a model built on ``meta``.
"""

from __future__ import annotations

from clipforge.configs import ClipConfig, ResNetConfig, TextConfig, ViTConfig

__all__ = ["count_parameters"]


def _layer_norm(width: int) -> int:
    return 2 * width


def _transformer(width: int, layers: int, mlp_width: int) -> int:
    """``layers`` pre-LN blocks: two LayerNorms, fused-QKV attention, two-layer MLP."""
    attention = 4 * width * width + 4 * width
    mlp = 2 * width * mlp_width + mlp_width + width
    return layers * (2 * _layer_norm(width) + attention + mlp)


def _vit(cfg: ViTConfig, embed_dim: int) -> int:
    w = cfg.width
    return (
        3 * w * cfg.patch_size**2  # conv1 (no bias)
        + w  # class embedding
        + (cfg.grid_size**2 + 1) * w  # positional embedding
        + 2 * _layer_norm(w)  # ln_pre, ln_post
        + _transformer(w, cfg.layers, cfg.mlp_width)
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
        + _transformer(w, cfg.layers, cfg.mlp_width)
        + _layer_norm(w)
        + w * embed_dim
    )


def count_parameters(cfg: ClipConfig) -> dict[str, int]:
    """``{"image", "text", "total"}`` exactly as ``CLIP(cfg).num_parameters()`` reports."""
    vision = cfg.vision
    image = (
        _resnet(vision, cfg.embed_dim)
        if isinstance(vision, ResNetConfig)
        else _vit(vision, cfg.embed_dim)
    )
    text = _text(cfg.text, cfg.embed_dim)
    return {"image": image, "text": text, "total": image + text + 1}  # + logit_scale
