"""transformers ``SiglipModel`` layout ↔ clipforge's SigLIP layout, and ``SiglipConfig`` ↔
:class:`ClipConfig` (SigLIP and fixed-resolution SigLIP 2, ``model_type: siglip``).

Pure functions on state dicts and config dicts; no I/O. Besides renaming, the mapping fuses
each block's separate ``q_proj``/``k_proj``/``v_proj`` into clipforge's ``in_proj_*``, splits
the pooling head's fused ``in_proj`` into ``q_proj`` and ``kv_proj``, and drops the unit
dimensions of ``probe``, ``logit_scale`` and ``logit_bias``.
"""

from __future__ import annotations

import re
import sys
from typing import Any, cast

import torch

from ...configs import ClipConfig, ConfigError, SigLipTextConfig, SigLipVisionConfig
from .base import CheckpointFormat, KeyTranslation, LayoutFamily
from .hf import register_family
from .renames import Renames
from .siglip_keys import read_tokenizer

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

_TOWERS = (("vision_model.", "visual."), ("text_model.", "text."))
#: (HF name under a tower, clipforge name under it); a name ending in "." renames a prefix
_NAMES: tuple[tuple[str, str], ...] = (
    ("embeddings.patch_embedding.", "patch_embed."),
    ("embeddings.position_embedding.weight", "positional_embedding"),
    ("embeddings.token_embedding.", "token_embedding."),
    ("encoder.layers.{i}.layer_norm1.", "transformer.resblocks.{i}.ln_1."),
    ("encoder.layers.{i}.layer_norm2.", "transformer.resblocks.{i}.ln_2."),
    ("encoder.layers.{i}.self_attn.out_proj.", "transformer.resblocks.{i}.attn.out_proj."),
    ("encoder.layers.{i}.mlp.fc1.", "transformer.resblocks.{i}.mlp.c_fc."),
    ("encoder.layers.{i}.mlp.fc2.", "transformer.resblocks.{i}.mlp.c_proj."),
    ("post_layernorm.", "ln_post."),
    ("final_layer_norm.", "ln_final."),
    ("head.attention.out_proj.", "attn_pool.out_proj."),
    ("head.layernorm.", "attn_pool.ln."),
    ("head.mlp.fc1.", "attn_pool.mlp.c_fc."),
    ("head.mlp.fc2.", "attn_pool.mlp.c_proj."),
    ("head.", "text_projection."),  # the text tower's head (the vision head is handled above)
)
_QKV = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
_FUSED = re.compile(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")
_HEAD_IN = re.compile(r"^head\.attention\.in_proj_(weight|bias)$")
_POOL_IN = re.compile(r"^attn_pool\.(q|kv)_proj\.(weight|bias)$")


_TO_NATIVE = Renames(_NAMES, "SigLIP (transformers)")
_FROM_NATIVE = Renames(tuple((native, hf) for hf, native in _NAMES), "SigLIP (transformers)")


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` is a transformers ``SiglipModel`` state dict."""
    return "vision_model.head.probe" in state or "text_model.head.weight" in state


def _tower_to_native(name: str, value: torch.Tensor, out: dict, qkv: dict) -> None:
    """One key of a tower (prefix removed) into ``out``; q/k/v parts are collected in ``qkv``."""
    if name.endswith("embeddings.position_ids"):
        return  # a buffer older checkpoints saved
    if found := _QKV.match(name):
        qkv.setdefault((found[1], found[3]), {})[found[2]] = value
    elif found := _HEAD_IN.match(name):
        width = value.shape[0] // 3
        out[f"attn_pool.q_proj.{found[1]}"] = value[:width]
        out[f"attn_pool.kv_proj.{found[1]}"] = value[width:]
    elif name == "head.probe":
        out["attn_pool.latent"] = value.reshape(value.shape[-2:])
    else:
        out[_TO_NATIVE(name)] = value


def to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``SiglipModel`` state dict → clipforge's."""
    out: dict[str, torch.Tensor] = {}
    for key in ("logit_scale", "logit_bias"):
        if key in state:
            out[key] = state[key].reshape(())
    for hf, native in _TOWERS:
        tower: dict[str, torch.Tensor] = {}
        qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            if key.startswith(hf):
                _tower_to_native(key.removeprefix(hf), value, tower, qkv)
        for (block, kind), parts in qkv.items():
            fused = torch.cat([parts["q"], parts["k"], parts["v"]])
            tower[f"transformer.resblocks.{block}.attn.in_proj_{kind}"] = fused
        out.update({native + k: v for k, v in tower.items()})
    return out


def _tower_from_native(name: str, value: torch.Tensor, out: dict, pool: dict) -> None:
    if found := _FUSED.match(name):
        prefix = f"encoder.layers.{found[1]}.self_attn"
        for part, chunk in zip("qkv", value.chunk(3), strict=True):
            out[f"{prefix}.{part}_proj.{found[2]}"] = chunk
    elif found := _POOL_IN.match(name):
        pool.setdefault(found[2], {})[found[1]] = value
    elif name == "attn_pool.latent":
        out["head.probe"] = value.unsqueeze(0)
    else:
        out[_FROM_NATIVE(name)] = value


def from_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """clipforge SigLIP state dict → transformers ``SiglipModel``'s (inverse of :func:`to_native`)."""
    out: dict[str, torch.Tensor] = {}
    for key in ("logit_scale", "logit_bias"):
        if key in state:
            out[key] = state[key].reshape(1)
    for hf, native in _TOWERS:
        tower: dict[str, torch.Tensor] = {}
        pool: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            if key.startswith(native):
                _tower_from_native(key.removeprefix(native), value, tower, pool)
        for kind, parts in pool.items():
            tower[f"head.attention.in_proj_{kind}"] = torch.cat([parts["q"], parts["kv"]])
        out.update({hf + k: v for k, v in tower.items()})
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


#: this module defines the KeyTranslation functions (typed as such for the checker)
_LAYOUT = cast(KeyTranslation, sys.modules[__name__])

register_family(
    LayoutFamily.of(
        "siglip",
        _LAYOUT,
        owns_config=lambda config_json: config_json.get("model_type") == "siglip",
        owns_model=lambda cfg: type(cfg.vision) is SigLipVisionConfig,  # NaFlex: siglip2
        read_tokenizer=read_tokenizer,
    )
)

#: bare ``SiglipModel`` state dicts, recognised before CLIPModel's (shared tower prefixes)
FORMAT = CheckpointFormat.of_state_layout("hf_siglip", _LAYOUT, priority=12)
