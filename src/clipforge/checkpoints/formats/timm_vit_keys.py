"""timm ViT trunks with open_clip's linear head (``vit_medium_patch16_gap_256``,
``vit_relpos_medium_patch16_cls_224``): open_clip's layout ↔ clipforge's, and the
``model_cfg`` translation.

open_clip builds these as ``CLIP`` (OpenAI's text keys at the top level) with the timm
trunk under ``visual.trunk.`` and the projection at ``visual.head.proj``. Image-tower
tensors are renamed one to one; ``cls_token`` and ``pos_embed`` lose timm's batch dimension.
"""

from __future__ import annotations

from typing import Any

import torch

from ...configs import ClipConfig, ConfigError, TextConfig
from ...configs.timm_vit import TIMM_VIT_TRUNKS, TimmViTConfig
from . import openai
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
_BLOCK = "transformer.resblocks.{i}."
#: (open_clip name under ``visual.``, clipforge name under ``visual.``)
_NAMES: tuple[tuple[str, str], ...] = (
    ("trunk.patch_embed.proj.", "patch_embed."),
    ("trunk.cls_token", "class_embedding"),
    ("trunk.pos_embed", "positional_embedding"),
    ("trunk.blocks.{i}.norm1.", _BLOCK + "ln_1."),
    ("trunk.blocks.{i}.norm2.", _BLOCK + "ln_2."),
    ("trunk.blocks.{i}.attn.qkv.weight", _BLOCK + "attn.in_proj_weight"),
    ("trunk.blocks.{i}.attn.qkv.bias", _BLOCK + "attn.in_proj_bias"),
    ("trunk.blocks.{i}.attn.proj.", _BLOCK + "attn.out_proj."),
    ("trunk.blocks.{i}.attn.rel_pos.mlp.", _BLOCK + "attn.rel_pos.mlp."),
    ("trunk.blocks.{i}.ls1.", _BLOCK + "ls_1."),
    ("trunk.blocks.{i}.ls2.", _BLOCK + "ls_2."),
    ("trunk.blocks.{i}.mlp.fc1.", _BLOCK + "mlp.c_fc."),
    ("trunk.blocks.{i}.mlp.fc2.", _BLOCK + "mlp.c_proj."),
    ("trunk.norm.", "ln_post."),
    ("head.proj.", "proj."),
)
_TO_NATIVE = Renames(_NAMES, "timm ViT", "image-tower key")
_FROM_NATIVE = Renames(tuple((b, a) for a, b in _NAMES), "timm ViT", "image-tower key")


def matches(state: StateDict) -> bool:
    """Whether ``state`` is open_clip's timm ViT + linear head layout."""
    return "visual.head.proj.weight" in state and "visual.trunk.blocks.0.attn.qkv.weight" in state


def to_native(state: StateDict) -> StateDict:
    """open_clip state dict → clipforge's (text keys as :mod:`.openai` renames them)."""
    out: StateDict = {}
    for key, value in openai.to_native(state).items():
        if not key.startswith("visual."):
            out[key] = value
            continue
        name = _TO_NATIVE(key.removeprefix("visual."))
        if name == "class_embedding":
            value = value.reshape(-1)
        elif name == "positional_embedding":
            value = value[0]
        out["visual." + name] = value
    return out


def from_native(state: StateDict) -> StateDict:
    """clipforge state dict → open_clip's (inverse of :func:`to_native`)."""
    out: StateDict = {}
    for key, value in openai.from_native(state).items():
        if not key.startswith("visual."):
            out[key] = value
            continue
        name = key.removeprefix("visual.")
        if name == "class_embedding":
            value = value.reshape(1, 1, -1)
        elif name == "positional_embedding":
            value = value.unsqueeze(0)
        out["visual." + _FROM_NATIVE(name)] = value
    return out


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip ``model_cfg`` naming one of these trunks → :class:`ClipConfig`."""
    vision, text = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    name = vision.get("timm_model_name")
    if name not in TIMM_VIT_TRUNKS:
        raise ConfigError(
            f"not a supported timm ViT trunk: {name!r} (known: {sorted(TIMM_VIT_TRUNKS)})"
        )
    trunk = TIMM_VIT_TRUNKS[name]
    if vision.get("timm_pool", "") != "" or vision.get("timm_proj", "linear") != "linear":
        raise ConfigError("timm ViT trunks keep their own pool and take open_clip's linear head")
    if vision.get("image_size", trunk.image_size) != trunk.image_size:
        raise ConfigError(f"{name} is built at {trunk.image_size} px")
    _reject_unsupported("text_cfg", text, _UNSUPPORTED_TEXT)
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"],
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        vision=trunk,
        text=text_config_to_native(text),
    )


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` with one of these trunks → open_clip ``model_cfg``."""
    v, t = cfg.vision, cfg.text
    if not isinstance(v, TimmViTConfig) or not isinstance(t, TextConfig):
        raise ConfigError("not a timm ViT architecture")
    name = next((n for n, trunk in TIMM_VIT_TRUNKS.items() if trunk == v), None)
    if name is None:
        raise ConfigError(f"no timm ViT trunk has this image tower ({v})")
    if cfg.norm_eps != 1e-5 or t.eot_token_id is not None or t.activation or t.norm_eps:
        raise ConfigError("open_clip's CLIP uses one activation, eps 1e-5, argmax pooling")
    text: dict[str, Any] = {
        "context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
        "heads": t.heads, "layers": t.layers,
    }  # fmt: skip
    if t.mlp_ratio != 4.0:
        text["mlp_ratio"] = t.mlp_ratio
    out: dict[str, Any] = {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {
            "timm_model_name": name, "timm_model_pretrained": False, "timm_pool": "",
            "timm_proj": "linear", "image_size": v.image_size,
        },
        "text_cfg": text,
    }  # fmt: skip
    if cfg.activation == "quick_gelu":
        out["quick_gelu"] = True
    return out


register_family(
    LayoutFamily(
        name="timm_vit",
        owns_config=lambda c: (
            dict(c.get("vision_cfg") or {}).get("timm_model_name") in TIMM_VIT_TRUNKS
        ),
        owns_model=lambda cfg: isinstance(cfg.vision, TimmViTConfig),
        config_to_native=config_to_native,
        config_from_native=config_from_native,
        to_native=to_native,
        from_native=from_native,
    )
)

#: recognised before OpenAI's layout, which would otherwise take the ``visual.`` keys as-is
FORMAT = CheckpointFormat(
    name="open_clip_timm_vit", matches=matches, to_native=to_native, from_native=from_native,
    priority=45,
)  # fmt: skip
