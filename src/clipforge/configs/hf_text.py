"""Text towers of open_clip's ``HFTextEncoder`` models, as clipforge configs (``text.type``
``"roberta"``, ``"t5_encoder"``, ``"m2m100_encoder"``).

open_clip builds these towers with transformers (``AutoModel`` of a hub name; the encoder of
encoder-decoder models) followed by a pooler and a projection; clipforge builds them natively
from these configs (no transformers at inference):

- ``roberta``: RoBERTa / XLM-RoBERTa (post-LN BERT encoder, learned positions counted from
  the padding id);
- ``t5_encoder``: the (m)T5 encoder stack (RMS norms, relative position buckets, gated-GELU);
- ``m2m100_encoder``: the M2M100 / NLLB-200 encoder (pre-LN, scaled embeddings, sinusoidal
  positions counted from the padding id).

Every config carries open_clip's ``pooler`` (``"mean"``: masked mean over non-padding
tokens; ``"cls"``: the first token, through the model's tanh pooler where it has one
(RoBERTa; the encoders of T5 and M2M100 have none); ``"cls_last_hidden_state"``: the first
token of the last layer) and ``proj``
(``"mlp"``: bias-free Linear-GELU-Linear through ``(width + embed_dim) // 2``; ``"linear"``: one
bias-free Linear; ``"none"``: the width is the embedding width). ``context_length`` is the
tokenizer's padded length (open_clip's default 77), not the model's position capacity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from .engine import ConfigError
from .model_config import TransformerGeometry, register_text_config
from .param_counts import layer_norm, register_parameter_counter

__all__ = ["HF_MODELS", "HF_TEXT_TYPES", "M2M100TextConfig", "RobertaTextConfig", "T5TextConfig"]

Pooler = Literal["mean", "cls", "cls_last_hidden_state"]
Projection = Literal["mlp", "linear", "none"]
HFActivation = Literal["gelu", "gelu_tanh", "relu"]


@dataclass(frozen=True)
class _HFText(TransformerGeometry):
    """The fields every HF text config has besides the transformer's ``width``, ``layers``
    and ``heads`` (defaults: ``xlm-roberta-base``'s; each family redeclares those it
    changes) and the checks they share."""

    section: ClassVar[str] = "text"
    context_length: int = 77
    vocab_size: int = 250002
    intermediate_size: int = 3072
    pad_token_id: int = 1
    norm_eps: float = 1e-5
    activation: HFActivation = "gelu"
    pooler: Pooler = "mean"
    proj: Projection = "mlp"

    def check(self, **extra: float) -> None:
        """:meth:`check_transformer`, and ``pad_token_id`` in the vocabulary."""
        self.check_transformer(**extra)
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"text.pad_token_id {self.pad_token_id} is outside the vocabulary "
                f"(0 to {self.vocab_size - 1})"
            )


@dataclass(frozen=True)
class RobertaTextConfig(_HFText):
    """RoBERTa / XLM-RoBERTa encoder (transformers' ``XLMRobertaModel``), defaults of
    ``xlm-roberta-base``."""

    type: ClassVar[str] = "roberta"
    max_positions: int = 514
    type_vocab_size: int = 1

    def __post_init__(self) -> None:
        self.check(max_positions=self.max_positions, type_vocab_size=self.type_vocab_size)
        if self.context_length + self.pad_token_id >= self.max_positions:
            raise ConfigError(
                f"text.context_length {self.context_length} needs positions up to "
                f"{self.context_length + self.pad_token_id}, beyond max_positions {self.max_positions}"
            )


@dataclass(frozen=True)
class T5TextConfig(_HFText):
    """The (m)T5 encoder stack (transformers' ``T5Stack``), defaults of ``google/mt5-base``.

    ``head_dim`` is T5's ``d_kv`` (attention inner width ``heads * head_dim``);
    ``gated`` selects the gated feed-forward (``act(wi_0 x) * wi_1 x``, mT5 / T5 v1.1).
    """

    type: ClassVar[str] = "t5_encoder"
    heads_split_width: ClassVar[bool] = False  # attention is heads x head_dim wide
    vocab_size: int = 250112
    intermediate_size: int = 2048
    pad_token_id: int = 0
    norm_eps: float = 1e-6
    activation: HFActivation = "gelu_tanh"
    head_dim: int = 64
    gated: bool = True
    relative_buckets: int = 32
    relative_max_distance: int = 128

    def __post_init__(self) -> None:
        self.check(head_dim=self.head_dim, relative_buckets=self.relative_buckets,
                   relative_max_distance=self.relative_max_distance)  # fmt: skip


@dataclass(frozen=True)
class M2M100TextConfig(_HFText):
    """The M2M100 / NLLB-200 encoder (transformers' ``M2M100Encoder``), defaults of
    ``facebook/nllb-200-distilled-600M``."""

    type: ClassVar[str] = "m2m100_encoder"
    vocab_size: int = 256206
    width: int = 1024
    heads: int = 16
    intermediate_size: int = 4096
    activation: HFActivation = "relu"
    pooler: Pooler = "cls"
    proj: Projection = "linear"
    max_positions: int = 1024
    scale_embedding: bool = True

    def __post_init__(self) -> None:
        self.check(max_positions=self.max_positions)


#: the ``text.type`` names of these towers
HF_TEXT_TYPES = (RobertaTextConfig.type, T5TextConfig.type, M2M100TextConfig.type)


def projection_parameters(width: int, proj: str, embed_dim: int) -> int:
    """Parameters of open_clip's bias-free projection head."""
    if proj == "mlp":
        hidden = (width + embed_dim) // 2
        return width * hidden + hidden * embed_dim
    return width * embed_dim if proj == "linear" else 0


def _linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


def _count_roberta(cfg: RobertaTextConfig, embed_dim: int) -> int:
    w, f = cfg.width, cfg.intermediate_size
    block = 4 * _linear(w, w) + _linear(w, f) + _linear(f, w) + 2 * layer_norm(w)
    embeddings = (cfg.vocab_size + cfg.max_positions + cfg.type_vocab_size) * w + layer_norm(w)
    pooler = _linear(w, w) if cfg.pooler == "cls" else 0
    return embeddings + cfg.layers * block + pooler + projection_parameters(w, cfg.proj, embed_dim)


def _count_t5(cfg: T5TextConfig, embed_dim: int) -> int:
    w, inner, f = cfg.width, cfg.heads * cfg.head_dim, cfg.intermediate_size
    ff = (3 if cfg.gated else 2) * w * f
    block = 4 * w * inner + ff + 2 * w  # bias-free projections, two RMS norm gains
    return (
        cfg.vocab_size * w + cfg.layers * block + cfg.relative_buckets * cfg.heads + w
        + projection_parameters(w, cfg.proj, embed_dim)
    )  # fmt: skip


def _count_m2m100(cfg: M2M100TextConfig, embed_dim: int) -> int:
    w, f = cfg.width, cfg.intermediate_size
    block = 4 * _linear(w, w) + _linear(w, f) + _linear(f, w) + 2 * layer_norm(w)
    return (
        cfg.vocab_size * w + cfg.layers * block + layer_norm(w)
        + projection_parameters(w, cfg.proj, embed_dim)
    )  # fmt: skip


for _config in (RobertaTextConfig, T5TextConfig, M2M100TextConfig):
    register_text_config(_config)  # not as a decorator: it would hide the class from type checkers
register_parameter_counter(RobertaTextConfig, _count_roberta)
register_parameter_counter(T5TextConfig, _count_t5)
register_parameter_counter(M2M100TextConfig, _count_m2m100)


#: the hub models open_clip's HF text towers name (``text_cfg.hf_model_name``): their text
#: ``type`` and the config values of their hub ``config.json`` (these machines cannot fetch
#: them; ``tests/models/test_hf_text_architectures.py`` checks the counts against open_clip's)
HF_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "xlm-roberta-base": ("roberta", {"vocab_size": 250002, "width": 768, "heads": 12,
                                     "layers": 12, "intermediate_size": 3072}),
    "xlm-roberta-large": ("roberta", {"vocab_size": 250002, "width": 1024, "heads": 16,
                                      "layers": 24, "intermediate_size": 4096}),
    "roberta-base": ("roberta", {"vocab_size": 50265, "width": 768, "heads": 12, "layers": 12,
                                 "intermediate_size": 3072}),
    "google/mt5-base": ("t5_encoder", {"vocab_size": 250112, "width": 768, "heads": 12,
                                       "layers": 12, "intermediate_size": 2048}),
    "google/mt5-xl": ("t5_encoder", {"vocab_size": 250112, "width": 2048, "heads": 32,
                                     "layers": 24, "intermediate_size": 5120}),
    "facebook/nllb-200-distilled-600M": ("m2m100_encoder", {"layers": 12,
                                                            "intermediate_size": 4096}),
    "facebook/nllb-200-distilled-1.3B": ("m2m100_encoder", {"layers": 24,
                                                            "intermediate_size": 8192}),
}  # fmt: skip
