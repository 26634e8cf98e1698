"""CoCa configurations (open_clip's ``coca_*`` models): the image tower with an attentional
pooler (``vision.type: "coca_vit"``), the causal text tower with an appended class token
(``text.type: "coca_text"``) and the multimodal text decoder (``decoder.type: "multimodal"``).

CoCa (Yu et al., 2022) trains a contrastive pair of towers and, on top, a captioning decoder
whose self-attention blocks read the text tower's tokens and whose cross-attention blocks
read the image tower's tokens. As open_clip builds it, the image tower either pools through
``attn_pooler_queries`` learned queries (``attentional_pool``; the first query is the
contrastive embedding, the others are the decoder's image tokens) or, without the pooler,
splits its class token (embedding) from its patch tokens (decoder input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .engine import ConfigError, bounded
from .model_config import (
    DECODER_CONFIGS,
    ImageTransformerGeometry,
    TextTransformerGeometry,
    TowerActivation,
    TransformerGeometry,
    register_text_config,
    register_vision_config,
)
from .param_counts import layer_norm, register_parameter_counter, transformer

__all__ = ["CocaTextConfig", "CocaVisionConfig", "MultimodalDecoderConfig"]


@dataclass(frozen=True)
class _TowerOverrides:
    """Per-tower activation / LayerNorm eps (``None``: the model-wide ones)."""

    activation: TowerActivation | None = None
    norm_eps: float | None = None


def _check(cfg: TransformerGeometry) -> None:
    norm_eps = getattr(cfg, "norm_eps", None)
    cfg.check_transformer(**({} if norm_eps is None else {"norm_eps": norm_eps}))


@dataclass(frozen=True)
class CocaVisionConfig(ImageTransformerGeometry, _TowerOverrides):
    """open_clip's ``VisionTransformer`` with ``output_tokens`` (and ``attentional_pool``)."""

    type: ClassVar[str] = "coca_vit"
    patch_size: int = 32
    attentional_pool: bool = False
    attn_pooler_queries: int = bounded(256, ge=2)
    attn_pooler_heads: int = bounded(8, ge=1)

    def __post_init__(self) -> None:
        _check(self)
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of patch_size "
                f"{self.patch_size}"
            )


@dataclass(frozen=True)
class CocaTextConfig(TextTransformerGeometry, _TowerOverrides):
    """open_clip's ``TextTransformer`` with ``embed_cls``: a learned class token appended
    after the ``context_length`` token positions (so ``context_length + 1`` positions), the
    embedding pooled from it, the other positions handed to the decoder. Keys are masked
    where the ids are ``pad_id``, at open_clip's legacy offset (one position late) unless
    ``correct_cls_mask``."""

    type: ClassVar[str] = "coca_text"
    context_length: int = 76
    pad_id: int = 0
    correct_cls_mask: bool = False

    def __post_init__(self) -> None:
        _check(self)


@dataclass(frozen=True)
class MultimodalDecoderConfig(TextTransformerGeometry, _TowerOverrides):
    """open_clip's ``MultimodalTransformer``: ``layers`` causal self-attention blocks, each
    followed by a cross-attention block over the image tokens, ``ln_final`` and a
    projection to ``vocab_size`` logits. ``width`` equals the text tower's and the image
    tokens' widths."""

    type: ClassVar[str] = "multimodal"
    section: ClassVar[str] = "decoder"
    context_length: int = 76

    def __post_init__(self) -> None:
        _check(self)


register_vision_config(CocaVisionConfig)
register_text_config(CocaTextConfig)
DECODER_CONFIGS.register(MultimodalDecoderConfig.type, MultimodalDecoderConfig)


def attentional_pooler(width: int, context: int, queries: int) -> int:
    """open_clip's ``AttentionalPooler(width, context)``: queries, attention, two norms."""
    attention = 2 * width * width + 2 * width * context + 4 * width  # q, k, v, out; biases
    return queries * width + attention + layer_norm(width) + layer_norm(context)


def _vision(cfg: CocaVisionConfig, embed_dim: int) -> int:
    w = cfg.width
    pool_dim = embed_dim if cfg.attentional_pool else w
    pool = attentional_pooler(embed_dim, w, cfg.attn_pooler_queries) if cfg.attentional_pool else 0
    return (
        3 * w * cfg.patch_size**2 + w + (cfg.grid_size**2 + 1) * w  # conv1, class, positions
        + layer_norm(w) + transformer(w, cfg.layers, cfg.mlp_width)
        + pool + layer_norm(pool_dim) + pool_dim * embed_dim
    )  # fmt: skip


def _text(cfg: CocaTextConfig, embed_dim: int) -> int:
    w = cfg.width
    return (
        cfg.vocab_size * w + (cfg.context_length + 1) * w + w  # tokens, positions, class
        + transformer(w, cfg.layers, cfg.mlp_width) + layer_norm(w) + w * embed_dim
    )  # fmt: skip


def decoder_parameters(cfg: MultimodalDecoderConfig) -> int:
    """Parameters of the multimodal decoder (its own count: not part of either tower)."""
    w = cfg.width
    cross = transformer(w, cfg.layers, cfg.mlp_width) + cfg.layers * layer_norm(w)  # + ln_1_kv
    return transformer(w, cfg.layers, cfg.mlp_width) + cross + layer_norm(w) + w * cfg.vocab_size


register_parameter_counter(CocaVisionConfig, _vision)
register_parameter_counter(CocaTextConfig, _text)
register_parameter_counter(MultimodalDecoderConfig, lambda cfg, _embed_dim: decoder_parameters(cfg))
