"""transformers ``SiglipModel`` layout ↔ clipforge's SigLIP layout, and ``SiglipConfig`` ↔
:class:`ClipConfig` (SigLIP and fixed-resolution SigLIP 2, ``model_type: siglip``).

Pure functions on state dicts and config dicts; no I/O. Besides renaming, the mapping fuses
each block's separate ``q_proj``/``k_proj``/``v_proj`` into clipforge's ``in_proj_*``, splits
the pooling head's fused ``in_proj`` into ``q_proj`` and ``kv_proj``, and drops the unit
dimensions of ``probe``, ``logit_scale`` and ``logit_bias``.
"""

from __future__ import annotations

from typing import Any

import torch

from ...configs import ClipConfig, ConfigError, SigLipTextConfig, SigLipVisionConfig
from .base import CheckpointFormat, LayoutFamily, layout_of
from .hf import register_family
from .renames import KeyTable, fused, prefixed
from .siglip_keys import read_tokenizer
from .timm_names import BLOCK

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

#: (HF name under a tower, clipforge name under it); a name ending in "." renames a prefix
_NAMES: tuple[tuple[str, str], ...] = (
    ("embeddings.patch_embedding.", "patch_embed."),
    ("embeddings.position_embedding.weight", "positional_embedding"),
    ("embeddings.token_embedding.", "token_embedding."),
    *prefixed("encoder.layers.{i}.", BLOCK, (
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("self_attn.out_proj.", "attn.out_proj."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
    )),
    ("post_layernorm.", "ln_post."),
    ("final_layer_norm.", "ln_final."),
    ("head.probe", "attn_pool.latent"),
    *prefixed("head.", "attn_pool.", (
        ("attention.q_proj.", "q_proj."),  # the halves of the pool's fused ``in_proj``
        ("attention.kv_proj.", "kv_proj."),
        ("attention.out_proj.", "out_proj."),
        ("layernorm.", "ln."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
    )),
    ("head.", "text_projection."),  # the text tower's head
)  # fmt: skip
_UNBATCHED = {"attn_pool.latent": 2}  # HF's probe: (1, 1, C)
_QKV = fused("encoder.layers.{i}.self_attn.{p}_proj.{kind}", "qkv", BLOCK + "attn.in_proj_{kind}")
_TOWERS = tuple(
    KeyTable(hf, native, _NAMES, "SigLIP (transformers)", merges=_QKV, unbatched=_UNBATCHED)
    for hf, native in (("vision_model.", "visual."), ("text_model.", "text."))
)
_POOL_IN = "vision_model.head.attention.in_proj_"
_LOGITS = ("logit_scale", "logit_bias")


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` is a transformers ``SiglipModel`` state dict."""
    return "vision_model.head.probe" in state or "text_model.head.weight" in state


def to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``SiglipModel`` state dict → clipforge's."""
    state = {k: v for k, v in state.items() if not k.endswith("embeddings.position_ids")}
    for kind in ("weight", "bias"):  # the pool's fused in_proj: the query, then key and value
        if (fused_in := state.pop(_POOL_IN + kind, None)) is not None:
            width = fused_in.shape[0] // 3
            state["vision_model.head.attention.q_proj." + kind] = fused_in[:width]
            state["vision_model.head.attention.kv_proj." + kind] = fused_in[width:]
    for tower in _TOWERS:
        state = tower.to_native(state)
    return {k: v.reshape(()) if k in _LOGITS else v for k, v in state.items()}


def from_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """clipforge SigLIP state dict → transformers ``SiglipModel``'s (inverse of :func:`to_native`)."""
    for tower in _TOWERS:
        state = tower.from_native(state)
    out = {k: v.reshape(1) if k in _LOGITS else v for k, v in state.items()}
    for kind in ("weight", "bias"):
        q = out.pop("vision_model.head.attention.q_proj." + kind, None)
        kv = out.pop("vision_model.head.attention.kv_proj." + kind, None)
        if q is not None and kv is not None:
            out[_POOL_IN + kind] = torch.cat([q, kv])
    return out


# ----------------------------------------------------------------------------- configs
_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}


def _activation(section: str, hf: dict[str, Any]) -> str:
    act = hf.get("hidden_act", "gelu_pytorch_tanh")
    if act not in _ACTIVATIONS:
        raise ConfigError(
            f"unsupported {section} hidden_act {act!r} (need one of {list(_ACTIVATIONS)})"
        )
    return _ACTIVATIONS[act]


def _mlp_ratio(intermediate: int, width: int) -> float:
    """A ratio whose ``int(width * ratio)`` is exactly ``intermediate``."""
    ratio = intermediate / width
    return ratio if int(width * ratio) == intermediate else (intermediate + 0.5) / width


def config_to_native(hf: dict[str, Any]) -> ClipConfig:
    """A ``SiglipConfig`` dict (``config.json``) → :class:`ClipConfig`."""
    if hf.get("model_type", "siglip") != "siglip":
        raise ConfigError(f"not a SigLIP config: model_type {hf.get('model_type')!r}")
    v, t = dict(hf.get("vision_config") or {}), dict(hf.get("text_config") or {})
    width, text_width = v.get("hidden_size", 768), t.get("hidden_size", 768)
    eps = {v.get("layer_norm_eps", 1e-6), t.get("layer_norm_eps", 1e-6)}
    if len(eps) != 1 or not v.get("vision_use_head", True):
        raise ConfigError("SigLIP towers need one LayerNorm eps and the vision head")
    if (t.get("projection_size") or text_width) != width:
        raise ConfigError("the text projection must map to the image width")
    vision = SigLipVisionConfig(
        image_size=v.get("image_size", 224), patch_size=v.get("patch_size", 16), width=width,
        layers=v.get("num_hidden_layers", 12), heads=v.get("num_attention_heads", 12),
        mlp_ratio=_mlp_ratio(v.get("intermediate_size", 3072), width),
        activation=_activation("vision", v),
    )  # fmt: skip
    text = SigLipTextConfig(
        context_length=t.get("max_position_embeddings", 64), vocab_size=t.get("vocab_size", 32000),
        width=text_width, heads=t.get("num_attention_heads", 12),
        layers=t.get("num_hidden_layers", 12),
        mlp_ratio=_mlp_ratio(t.get("intermediate_size", 3072), text_width),
        activation=_activation("text", t),
    )  # fmt: skip
    return ClipConfig(
        embed_dim=width, vision=vision, text=text, norm_eps=eps.pop(), init_logit_bias=-10.0
    )


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` of a SigLIP model → a ``SiglipConfig`` dict."""
    v, t = cfg.vision, cfg.text
    if not isinstance(v, SigLipVisionConfig) or not isinstance(t, SigLipTextConfig):
        raise ConfigError("not a SigLIP architecture")
    if v.proj or t.proj != "linear" or v.width != cfg.embed_dim:
        raise ConfigError("transformers' SiglipModel has no image projection and a text head")
    names = {native: hf for hf, native in _ACTIVATIONS.items()}
    common = {"layer_norm_eps": cfg.norm_eps, "attention_dropout": 0.0}
    return {
        "model_type": "siglip",
        "architectures": ["SiglipModel"],
        "vision_config": {
            **common, "hidden_size": v.width, "intermediate_size": v.mlp_width,
            "num_hidden_layers": v.layers, "num_attention_heads": v.heads,
            "image_size": v.image_size, "patch_size": v.patch_size, "num_channels": 3,
            "hidden_act": names[v.activation or cfg.activation],
        },
        "text_config": {
            **common, "hidden_size": t.width, "intermediate_size": t.mlp_width,
            "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
            "vocab_size": t.vocab_size, "max_position_embeddings": t.context_length,
            "projection_size": cfg.embed_dim, "hidden_act": names[t.activation or cfg.activation],
        },
    }  # fmt: skip


register_family(
    LayoutFamily.of(
        "siglip",
        layout_of(__name__),
        owns_config=lambda config_json: config_json.get("model_type") == "siglip",
        owns_model=lambda cfg: type(cfg.vision) is SigLipVisionConfig,  # NaFlex: siglip2
        read_tokenizer=read_tokenizer,
    )
)

#: bare ``SiglipModel`` state dicts, recognised before CLIPModel's (shared tower prefixes)
FORMAT = CheckpointFormat.of_state_layout("hf_siglip", layout_of(__name__), priority=12)
