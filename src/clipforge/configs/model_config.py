"""Typed, validated model configurations.

An architecture is data: one JSON file in ``architectures/`` per name. The JSON holds an
``embed_dim``, an activation, a ``vision`` block whose ``type`` selects the tower
(``"vit"``, ``"resnet"``, ``"siglip_vit"``, ...) and a ``text`` block whose optional ``type``
selects the text tower (CLIP's causal transformer when absent). New architectures need a new
file, not code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..registry import Registry
from .engine import ConfigError, build, unknown_name

ActivationName = Literal["gelu", "quick_gelu"]
ACTIVATIONS: tuple[str, ...] = ("gelu", "quick_gelu")
#: a tower's own activation (``None``: the model-wide one); tanh-GELU only per tower
TowerActivation = Literal["gelu", "gelu_tanh", "quick_gelu"]
#: per-tower override fields: omitted from :meth:`ClipConfig.to_dict` while ``None``
_TOWER_OVERRIDES = ("activation", "norm_eps")
#: options added after configs were first written: omitted from :meth:`ClipConfig.to_dict`
#: at their defaults, so earlier configs stay identical (class name -> field names)
_LATER_OPTIONS: dict[str, tuple[str, ...]] = {
    "ViTConfig": ("ls_init_value", "no_ln_pre", "pool_type", "final_ln_after_pool"),
    "TextConfig": ("causal", "pool_type"),
}


def _require_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"{owner}.{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class TransformerGeometry:
    """Shared by the configs of transformer towers: ``width``, ``layers``, ``heads``
    declared once, derived sizes and the checks every such tower needs. ``section`` names the
    tower in errors."""

    section: ClassVar[str] = "vision"
    #: heads split ``width`` (off where a config sets its own head width: T5's ``head_dim``)
    heads_split_width: ClassVar[bool] = True
    width: int = 768
    layers: int = 12
    heads: int = 12

    def check_transformer(self, **extra: float) -> None:
        """Every size positive and (unless ``heads_split_width`` is off) ``width`` divisible
        by ``heads`` (``ConfigError`` naming the field if not)."""
        sizes = {k: getattr(self, k) for k in ("width", "heads", "layers")}
        for name in _OPTIONAL_SIZES:
            if name in self.__dataclass_fields__:
                sizes[name] = getattr(self, name)
        _require_positive(self.section, **sizes, **extra)
        if self.heads_split_width and self.width % self.heads:
            raise ConfigError(
                f"{self.section}.width {self.width} is not divisible by heads {self.heads}"
            )

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size  # type: ignore[attr-defined]

    @property
    def head_width(self) -> int:
        return self.width // self.heads

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)  # type: ignore[attr-defined]


#: sizes :meth:`TransformerGeometry.check_transformer` checks where a config has them
_OPTIONAL_SIZES = (
    "mlp_ratio", "image_size", "patch_size", "context_length", "vocab_size", "intermediate_size",
)  # fmt: skip


@dataclass(frozen=True)
class ImageTransformerGeometry(TransformerGeometry):
    """The fields every ViT-like image tower config shares (subclasses change defaults)."""

    image_size: int = 224
    patch_size: int = 16
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class TextTransformerGeometry(TransformerGeometry):
    """The fields every transformer text tower config shares (CLIP's defaults)."""

    section: ClassVar[str] = "text"
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class ViTConfig(ImageTransformerGeometry):
    """Vision transformer image tower (class token, pre-LN, ``ln_pre``/``ln_post``).

    ``activation``/``norm_eps`` override the model-wide ones for this tower (``None``: the
    model's), for checkpoints whose towers differ (e.g. a transformers ``CLIPConfig``).
    open_clip's options, under its names: ``ls_init_value`` (layer scale in every block,
    ``ViT-*-alt``), ``no_ln_pre``, ``pool_type`` (``"tok"``: the class token, ``"avg"``: the
    mean of the patch tokens) and ``final_ln_after_pool`` (``ln_post`` on the pooled
    feature instead of every token), as CLIPA's towers set them.
    """

    type: ClassVar[str] = "vit"
    patch_size: int = 32
    activation: TowerActivation | None = None
    norm_eps: float | None = None
    ls_init_value: float | None = None
    no_ln_pre: bool = False
    pool_type: Literal["tok", "avg"] = "tok"
    final_ln_after_pool: bool = False

    def __post_init__(self) -> None:
        self.check_transformer(**_given(norm_eps=self.norm_eps))
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )


@dataclass(frozen=True)
class ResNetConfig:
    """OpenAI ModifiedResNet image tower (3-conv stem, anti-aliased strides, attention pool)."""

    type: ClassVar[str] = "resnet"
    image_size: int = 224
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    heads: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        if len(self.layers) != 4:
            raise ConfigError(f"resnet layers must list 4 stage depths, got {self.layers}")
        _require_positive("vision", image_size=self.image_size, width=self.width, heads=self.heads)
        if self.image_size % 32:
            raise ConfigError(f"resnet image_size must be a multiple of 32, got {self.image_size}")
        if (self.width * 32) % self.heads:
            raise ConfigError("resnet attention-pool width (width*32) is not divisible by heads")


VisionConfig = Any  # a registered vision config dataclass: ViTConfig, ResNetConfig, ...
#: ``vision.type`` -> the tower config dataclass it builds
VISION_CONFIGS: Registry[type] = Registry("vision.type")


def register_vision_config(config_class: type, *, replace: bool = False) -> type:
    """Make ``{"vision": {"type": config_class.type, ...}}`` build ``config_class``.

    The class is a frozen dataclass with a ``type: ClassVar[str]`` and an ``image_size``;
    pair it with a tower class registered for it in ``clipforge.models``.
    """
    name = getattr(config_class, "type", None)
    if not dataclasses.is_dataclass(config_class) or not isinstance(name, str):
        raise TypeError(f"{config_class!r} must be a dataclass with a 'type' ClassVar")
    return VISION_CONFIGS.register(name, config_class, replace=replace)


register_vision_config(ViTConfig)
register_vision_config(ResNetConfig)


@dataclass(frozen=True)
class TextConfig(TextTransformerGeometry):
    """Causal text transformer with EOT pooling.

    ``eot_token_id=None`` pools at the argmax of the token ids (OpenAI; EOT is the largest
    id); an integer pools at the first occurrence of that id (transformers' rule).
    ``causal=False`` drops the causal mask (open_clip's ``no_causal_mask``, MobileCLIP):
    every position then sees the padding, so inputs are never trimmed.
    ``pool_type="last"`` pools the last position of the (padded) sequence instead (open_clip's
    ``pool_type: "last"``, CLIPA).
    """

    type: ClassVar[str] = "clip"
    eot_token_id: int | None = None
    activation: TowerActivation | None = None
    norm_eps: float | None = None
    causal: bool = True
    pool_type: Literal["eot", "last"] = "eot"

    def __post_init__(self) -> None:
        self.check_transformer(**_given(norm_eps=self.norm_eps))


#: ``text.type`` -> the tower config dataclass it builds
TEXT_CONFIGS: Registry[type] = Registry("text.type")
#: the text ``type`` of a ``text`` block that names none: CLIP's causal transformer
DEFAULT_TEXT_TYPE = "clip"


def register_text_config(config_class: type, *, replace: bool = False) -> type:
    """Make ``{"text": {"type": config_class.type, ...}}`` build ``config_class``.

    Like :func:`register_vision_config`: a frozen dataclass with a ``type: ClassVar[str]``,
    a ``context_length`` and a ``vocab_size``, paired with a registered tower class.
    """
    name = getattr(config_class, "type", None)
    if not dataclasses.is_dataclass(config_class) or not isinstance(name, str):
        raise TypeError(f"{config_class!r} must be a dataclass with a 'type' ClassVar")
    return TEXT_CONFIGS.register(name, config_class, replace=replace)


register_text_config(TextConfig)

#: ``decoder.type`` -> the config dataclass of a model's text decoder (CoCa's captioner)
DECODER_CONFIGS: Registry[type] = Registry("decoder.type")


def _given(**values: float | None) -> dict[str, float]:
    """The values that are set (optional overrides are checked only when given)."""
    return {k: v for k, v in values.items() if v is not None}


def tower_to_dict(tower: Any) -> dict[str, Any]:
    """A tower config's JSON form: tuples as lists, unset per-tower overrides left out."""
    data = dataclasses.asdict(tower)
    data = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in data.items()
        if not (k in _TOWER_OVERRIDES and v is None)
    }
    fields = {f.name: f.default for f in dataclasses.fields(tower)}
    for name in _LATER_OPTIONS.get(type(tower).__name__, ()):
        if data[name] == fields[name]:
            del data[name]
    return data


def _text_to_dict(text: Any) -> dict[str, Any]:
    data = tower_to_dict(text)
    return data if text.type == DEFAULT_TEXT_TYPE else {"type": text.type, **data}


def _section(registry: Registry[type], value: Any, where: str, default: str | None) -> Any:
    """Build a tower section (a mapping with an optional ``type``) from its registry."""
    if not isinstance(value, dict):
        raise ConfigError(f"'{where}' must be a mapping, got {type(value).__name__}")
    value = dict(value)
    kind = value.pop("type", default)
    if kind not in registry:
        raise unknown_name(f"{where}.type", str(kind), registry.names())
    return build(registry.get(kind), value, where)


@dataclass(frozen=True)
class ClipConfig:
    """A whole CLIP model: two towers projected into a shared ``embed_dim`` space.

    ``init_logit_bias`` (SigLIP) gives the model a learnable ``logit_bias`` added to the
    scaled similarities; ``None`` (CLIP) means no bias parameter.
    """

    embed_dim: int
    vision: VisionConfig
    text: Any = field(default_factory=TextConfig)  # a registered text config
    activation: ActivationName = "gelu"
    norm_eps: float = 1e-5
    init_logit_scale: float = 2.6592600345611572  # ln(1 / 0.07)
    init_logit_bias: float | None = None
    #: a text decoder over image tokens (CoCa's captioner); ``None`` for contrastive models
    decoder: Any = None

    def __post_init__(self) -> None:
        _require_positive("model", embed_dim=self.embed_dim, norm_eps=self.norm_eps)
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    def replace(self, **changes: Any) -> ClipConfig:
        """A copy with some top-level fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        vision = {"type": self.vision.type, **tower_to_dict(self.vision)}
        data = {
            "embed_dim": self.embed_dim,
            "activation": self.activation,
            "norm_eps": self.norm_eps,
            "init_logit_scale": self.init_logit_scale,
            "vision": vision,
            "text": _text_to_dict(self.text),
        }
        if self.init_logit_bias is not None:
            data["init_logit_bias"] = self.init_logit_bias
        if self.decoder is not None:
            data["decoder"] = {"type": self.decoder.type, **tower_to_dict(self.decoder)}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], prefix: str = "") -> ClipConfig:
        """Build and validate a config from its JSON form (one engine: unknown keys, types and
        ranges are checked with did-you-mean hints; ``prefix`` names where it sits, e.g.
        ``model.architecture`` in a training config)."""
        dot = f"{prefix}." if prefix else ""
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        vision = data.pop("vision", None)
        if not isinstance(vision, dict):
            raise ConfigError(f"model config needs a '{dot}vision' mapping with a 'type'")
        if vision.get("type") in VISION_CONFIGS and "embed_dim" not in data:
            raise ConfigError(f"model config needs '{dot}embed_dim'")
        data["vision"] = _section(VISION_CONFIGS, vision, f"{dot}vision", None)
        text = data.get("text") or {}
        data["text"] = _section(TEXT_CONFIGS, text, f"{dot}text", DEFAULT_TEXT_TYPE)
        if data.get("decoder") is not None:
            data["decoder"] = _section(DECODER_CONFIGS, data["decoder"], f"{dot}decoder", None)
        return build(cls, data, prefix)
