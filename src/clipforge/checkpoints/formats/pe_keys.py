"""Perception Encoder key mapping: open_clip's layout (timm ``vit_pe_core_*`` trunk under
``visual.trunk.``) ↔ clipforge's, and open_clip's PE ``model_cfg`` ↔ :class:`ClipConfig`.

Pure functions; no I/O. The text tower (``text.*``, open_clip's ``CustomTextCLIP``) and
``logit_scale`` keep their names. Image-tower tensors are renamed one to one, and three
lose timm's batch dimension: ``cls_token`` ``(1, 1, C)``, ``pos_embed`` ``(1, L, C)`` and
the pool's ``latent`` ``(1, 1, C)``.
"""

from __future__ import annotations

from typing import Any

import torch

from ...configs import ClipConfig, ConfigError, TextConfig
from ...configs.pe import PE_TRUNKS, PerceptionVisionConfig
from .base import CheckpointFormat, LayoutFamily
from .open_clip import (
    _UNSUPPORTED_TEXT,
    _reject_unsupported,
    register_family,
    text_config_to_native,
)
from .renames import Renames

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

StateDict = dict[str, torch.Tensor]
_TIMM = "visual.trunk."
_NATIVE = "visual."
_BLOCK = "transformer.resblocks.{i}."
#: (timm name under ``visual.trunk.``, clipforge name under ``visual.``)
_NAMES: tuple[tuple[str, str], ...] = (
    ("patch_embed.proj.weight", "patch_embed.weight"),
    ("cls_token", "class_embedding"),
    ("pos_embed", "positional_embedding"),
    ("norm_pre.", "ln_pre."),
    ("blocks.{i}.norm1.", _BLOCK + "ln_1."),
    ("blocks.{i}.norm2.", _BLOCK + "ln_2."),
    ("blocks.{i}.attn.qkv.weight", _BLOCK + "attn.in_proj_weight"),
    ("blocks.{i}.attn.qkv.bias", _BLOCK + "attn.in_proj_bias"),
    ("blocks.{i}.attn.proj.", _BLOCK + "attn.out_proj."),
    ("blocks.{i}.mlp.fc1.", _BLOCK + "mlp.c_fc."),
    ("blocks.{i}.mlp.fc2.", _BLOCK + "mlp.c_proj."),
    ("norm.", "ln_post."),
    ("attn_pool.latent", "attn_pool.latent"),
    ("attn_pool.q.", "attn_pool.q_proj."),
    ("attn_pool.kv.", "attn_pool.kv_proj."),
    ("attn_pool.proj.", "attn_pool.out_proj."),
    ("attn_pool.norm.", "attn_pool.ln."),
    ("attn_pool.mlp.fc1.", "attn_pool.mlp.c_fc."),
    ("attn_pool.mlp.fc2.", "attn_pool.mlp.c_proj."),
    ("head.", "proj."),
)
_UNBATCHED = ("class_embedding", "positional_embedding", "attn_pool.latent")
_TO_NATIVE = Renames(_NAMES, "Perception Encoder", "image-tower key")
_FROM_NATIVE = Renames(tuple((b, a) for a, b in _NAMES), "Perception Encoder", "image-tower key")


def matches(state: StateDict) -> bool:
    """Whether ``state`` is an open_clip PE state dict (timm trunk: pre-norm + MAP pool)."""
    return f"{_TIMM}norm_pre.weight" in state and f"{_TIMM}attn_pool.latent" in state


def to_native(state: StateDict) -> StateDict:
    """open_clip PE state dict → clipforge's (same tensors, renamed, batch dims dropped)."""
    out: StateDict = {}
    for key, value in state.items():
        if not key.startswith(_TIMM):
            out[key] = value
            continue
        name = _TO_NATIVE(key.removeprefix(_TIMM))
        if name in _UNBATCHED:
            value = value.reshape(value.shape[-1]) if name == "class_embedding" else value[0]
        out[_NATIVE + name] = value
    return out


def from_native(state: StateDict) -> StateDict:
    """clipforge PE state dict → open_clip's (inverse of :func:`to_native`)."""
    out: StateDict = {}
    for key, value in state.items():
        if not key.startswith(_NATIVE):
            out[key] = value
            continue
        name = key.removeprefix(_NATIVE)
        if name == "class_embedding":
            value = value.reshape(1, 1, -1)
        elif name in _UNBATCHED:
            value = value.unsqueeze(0)
        out[_TIMM + _FROM_NATIVE(name)] = value
    return out


# ----------------------------------------------------------------------------- configs
def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip PE ``model_cfg`` → :class:`ClipConfig` (the trunk by its timm name)."""
    vision, text = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    name = vision.get("timm_model_name")
    if name not in PE_TRUNKS:
        raise ConfigError(f"not a timm PE-Core trunk: {name!r} (known: {sorted(PE_TRUNKS)})")
    if vision.get("timm_pool") != "map" or vision.get("timm_proj") not in (None, ""):
        raise ConfigError("PE-Core trunks pool with their attention pool and timm's head")
    trunk = PE_TRUNKS[name]
    if vision.get("image_size", trunk.image_size) != trunk.image_size:
        raise ConfigError(f"{name} is built at {trunk.image_size} px")
    _reject_unsupported("text_cfg", text, _UNSUPPORTED_TEXT)
    if model_cfg.get("quick_gelu") or text.get("norm_kwargs") or text.get("act_kwargs"):
        raise ConfigError("PE-Core text towers use GELU and LayerNorm eps 1e-5")
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"], vision=trunk, text=text_config_to_native(text)
    )


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` of a PE-Core model → open_clip ``model_cfg``."""
    v, t = cfg.vision, cfg.text
    if not isinstance(v, PerceptionVisionConfig) or not isinstance(t, TextConfig):
        raise ConfigError("not a PE-Core architecture")
    name = next((n for n, trunk in PE_TRUNKS.items() if trunk == v), None)
    if name is None:
        raise ConfigError(f"no timm PE-Core trunk has this image tower ({v})")
    text_act, text_eps = t.activation or cfg.activation, t.norm_eps or cfg.norm_eps
    if text_eps != 1e-5 or text_act != "gelu" or t.eot_token_id is not None:
        raise ConfigError("open_clip PE text towers use GELU, LayerNorm eps 1e-5, argmax pooling")
    text: dict[str, Any] = {
        "context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
        "heads": t.heads, "layers": t.layers,
    }  # fmt: skip
    if t.mlp_ratio != 4.0:
        text["mlp_ratio"] = t.mlp_ratio
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {
            "image_size": v.image_size, "timm_model_name": name, "timm_model_pretrained": False,
            "timm_pool": "map", "timm_proj": None,
        },
        "text_cfg": text,
        "custom_text": True,
    }  # fmt: skip


def _owns_config(model_cfg: dict[str, Any]) -> bool:
    return dict(model_cfg.get("vision_cfg") or {}).get("timm_model_name") in PE_TRUNKS


register_family(
    LayoutFamily(
        name="pe",
        owns_config=_owns_config,
        owns_model=lambda cfg: isinstance(cfg.vision, PerceptionVisionConfig),
        config_to_native=config_to_native,
        config_from_native=config_from_native,
        to_native=to_native,
        from_native=from_native,
    )
)

#: bare open_clip PE state dicts: recognised before SigLIP's (both have a MAP pool; only PE
#: has ``norm_pre``) and clipforge's own layout (they share its ``text.*`` keys)
FORMAT = CheckpointFormat(
    name="open_clip_pe", matches=matches, to_native=to_native, from_native=from_native,
    priority=45,
)  # fmt: skip
