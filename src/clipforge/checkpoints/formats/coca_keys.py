"""open_clip CoCa checkpoints (``coca_*``): ``model_cfg`` with a ``multimodal_cfg`` ↔
:class:`ClipConfig` with a ``decoder``, and the key layout.

clipforge's CoCa modules carry open_clip's parameter names (``visual.attn_pool.*``,
``text.cls_emb``, ``text_decoder.*``), so the state dicts are the same but for an HF text
tower (``coca_roberta-ViT-B-32``), whose ``text.transformer.*`` keys :mod:`.hf_text_keys`
translates. open_clip sizes the decoder's vocabulary from ``text_cfg.vocab_size`` (49408 when
an HF text config leaves it out), not from ``multimodal_cfg``; its ``mlp_ratio`` is ignored.
"""

from __future__ import annotations

import sys
from typing import Any, cast

import torch

from ...configs import ClipConfig, ConfigError
from ...configs.coca import CocaTextConfig, CocaVisionConfig, MultimodalDecoderConfig
from . import hf_text_keys
from .base import CheckpointFormat, KeyTranslation, LayoutFamily
from .open_clip import _reject_unsupported, register_family, text_geometry

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

StateDict = dict[str, torch.Tensor]
_VISION_UNSUPPORTED = ("timm_model_name", "ls_init_value", "no_ln_pre", "qk_norm",
                       "final_ln_after_pool", "block_type")  # fmt: skip
_TEXT_UNSUPPORTED = ("ls_init_value", "proj_bias", "no_causal_mask", "block_type", "qk_norm")
_DEFAULT_VOCAB = 49408  # open_clip's CLIPTextCfg.vocab_size


def matches(state: StateDict) -> bool:
    """Whether ``state`` is a CoCa state dict (it has the multimodal decoder)."""
    return "text_decoder.ln_final.weight" in state


def to_native(state: StateDict) -> StateDict:
    """open_clip CoCa state dict → clipforge's (only an HF text tower is renamed)."""
    return hf_text_keys.to_native(state) if hf_text_keys.matches(state) else dict(state)


def from_native(state: StateDict) -> StateDict:
    """clipforge CoCa state dict → open_clip's (inverse of :func:`to_native`)."""
    return dict(state) if "text.cls_emb" in state else hf_text_keys.from_native(state)


def _vision_to_native(vision: dict[str, Any]) -> CocaVisionConfig:
    _reject_unsupported("vision_cfg", vision, _VISION_UNSUPPORTED)
    pool = vision.get("attentional_pool", False)
    if not isinstance(pool, bool):
        raise ConfigError(f"open_clip attentional_pool {pool!r} (parallel/cascade) is not supported")
    width = vision.get("width", 768)
    return CocaVisionConfig(
        image_size=vision.get("image_size", 224), patch_size=vision.get("patch_size", 16),
        width=width, layers=vision.get("layers", 12),
        heads=width // vision.get("head_width", 64), mlp_ratio=vision.get("mlp_ratio", 4.0),
        attentional_pool=pool, attn_pooler_queries=vision.get("attn_pooler_queries", 256),
        attn_pooler_heads=vision.get("attn_pooler_heads", 8),
    )  # fmt: skip


def _text_to_native(text: dict[str, Any]) -> Any:
    if text.get("hf_model_name"):
        # the HF model's own config sizes it: open_clip reads width / vocab_size only elsewhere
        return hf_text_keys.text_to_native(
            {k: v for k, v in text.items() if k not in ("vocab_size", "width")}
        )
    _reject_unsupported("text_cfg", text, _TEXT_UNSUPPORTED)
    if not text.get("embed_cls") or text.get("pool_type", "argmax") != "argmax":
        raise ConfigError("CoCa text towers need embed_cls (their class token is pooled)")
    return CocaTextConfig(**text_geometry(text), pad_id=text.get("pad_id", 0))


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip CoCa ``model_cfg`` → :class:`ClipConfig` with a multimodal ``decoder``."""
    text = dict(model_cfg.get("text_cfg") or {})
    mm = dict(model_cfg.get("multimodal_cfg") or {})
    if mm.get("ls_init_value"):
        raise ConfigError("open_clip multimodal_cfg ls_init_value is not supported")
    decoder = MultimodalDecoderConfig(
        context_length=mm.get("context_length", 77), vocab_size=text.get("vocab_size", _DEFAULT_VOCAB),
        width=mm.get("width", 512), heads=mm.get("heads", 8), layers=mm.get("layers", 12),
    )  # fmt: skip
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"],
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        vision=_vision_to_native(dict(model_cfg.get("vision_cfg") or {})),
        text=_text_to_native(text),
        decoder=decoder,
    )


def _check_exportable(cfg: ClipConfig) -> None:
    towers = (cfg.vision, cfg.decoder) + ((cfg.text,) if isinstance(cfg.text, CocaTextConfig) else ())
    overrides = [type(t).__name__ for t in towers if t.activation or t.norm_eps is not None]
    if overrides or cfg.norm_eps != 1e-5:
        raise ConfigError(f"open_clip's CoCa has one activation and LayerNorm eps 1e-5 ({overrides})")
    if cfg.decoder.mlp_ratio != 4.0:
        raise ConfigError("open_clip's CoCa decoder has mlp_ratio 4")
    if isinstance(cfg.text, CocaTextConfig) and cfg.text.correct_cls_mask:
        raise ConfigError("open_clip's CoCa factory builds only the legacy class-token mask")


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` of a CoCa model → open_clip ``model_cfg``."""
    v, t, d = cfg.vision, cfg.text, cfg.decoder
    if not isinstance(v, CocaVisionConfig) or not isinstance(d, MultimodalDecoderConfig):
        raise ConfigError("not a CoCa architecture")
    _check_exportable(cfg)
    vision = {
        "image_size": v.image_size, "patch_size": v.patch_size, "width": v.width,
        "layers": v.layers, "head_width": v.head_width, "mlp_ratio": v.mlp_ratio,
        "attentional_pool": v.attentional_pool, "attn_pooler_queries": v.attn_pooler_queries,
        "attn_pooler_heads": v.attn_pooler_heads, "output_tokens": True,
    }  # fmt: skip
    if isinstance(t, CocaTextConfig):
        if t.vocab_size != d.vocab_size:
            raise ConfigError("open_clip's CoCa decoder has the text tower's vocabulary size")
        text = {**{k: getattr(t, k) for k in ("context_length", "width", "heads", "layers",
                                             "mlp_ratio")},
                "embed_cls": True, "pad_id": t.pad_id}  # fmt: skip
    else:
        text = hf_text_keys.text_from_native(t)
    text.update(vocab_size=d.vocab_size, output_tokens=True)
    multimodal = {"context_length": d.context_length, "vocab_size": d.vocab_size,
                  "width": d.width, "heads": d.heads, "layers": d.layers}  # fmt: skip
    return {
        "embed_dim": cfg.embed_dim, "quick_gelu": cfg.activation == "quick_gelu",
        "vision_cfg": vision, "text_cfg": text, "multimodal_cfg": multimodal,
        "custom_text": True,
    }  # fmt: skip


#: this module defines the KeyTranslation functions (typed as such for the checker)
_LAYOUT = cast(KeyTranslation, sys.modules[__name__])

register_family(
    LayoutFamily.of(
        "coca",
        _LAYOUT,
        owns_config=lambda model_cfg: bool(model_cfg.get("multimodal_cfg")),
        owns_model=lambda cfg: cfg.decoder is not None,
        read_tokenizer=hf_text_keys.read_tokenizer,
    )
)

#: bare CoCa state dicts: recognised by the decoder before an HF text tower's layout
FORMAT = CheckpointFormat.of_state_layout("open_clip_coca", _LAYOUT, priority=46)
