"""ViTamin CLIPs in open_clip's layout (timm ``vitamin_*`` trunk under ``visual.trunk.``,
projection at ``visual.head.proj``, text tower under ``text.`` as ``CustomTextCLIP``
names it) ↔ clipforge's, and the ``model_cfg`` translation.

The tables are data: one-to-one renames (``{i}`` a block index; a name ending in "." renames
a module prefix) and one merge, GeGLU's gate ``w0`` and value ``w1`` stacked into ``c_fc``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from typing import Any, cast

import torch

from ...configs import ClipConfig, ConfigError, TextConfig
from ...configs.vitamin import VITAMIN_TRUNKS, ViTaminVisionConfig
from .base import CheckpointFormat, KeyTranslation, LayoutFamily, StateDict
from .open_clip import (
    _UNSUPPORTED_TEXT,
    _reject_unsupported,
    register_family,
    text_config_from_native,
    text_config_to_native,
)
from .renames import Renames

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

_BLOCK = "transformer.resblocks.{i}."
#: open_clip name under ``visual.`` -> clipforge name under ``visual.``
_NAMES: dict[str, str] = {
    "trunk.patch_embed.backbone.": "conv_stem.", "trunk.pos_embed": "pos_embed",
    "trunk.blocks.{i}.norm1.": _BLOCK + "ln_1.", "trunk.blocks.{i}.norm2.": _BLOCK + "ln_2.",
    "trunk.blocks.{i}.attn.qkv.weight": _BLOCK + "attn.in_proj_weight",
    "trunk.blocks.{i}.attn.qkv.bias": _BLOCK + "attn.in_proj_bias",
    "trunk.blocks.{i}.attn.proj.": _BLOCK + "attn.out_proj.",
    "trunk.blocks.{i}.mlp.norm.": _BLOCK + "mlp.ln.",
    "trunk.blocks.{i}.mlp.w2.": _BLOCK + "mlp.c_proj.",
    "trunk.fc_norm.": "ln_post.", "head.proj.": "proj.",
}  # fmt: skip
#: GeGLU's two input projections, stacked on dim 0 (gate first) into one native tensor
_GATE, _VALUE = "mlp.w0.", "mlp.w1."
_TIMM_MLP = re.compile(r"^trunk\.blocks\.(\d+)\.(mlp\.w[01]\.)(weight|bias)$")
_NATIVE_MLP = re.compile(r"^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)$")
_TO_NATIVE = Renames(_NAMES.items(), "ViTamin", "image-tower key")
_FROM_NATIVE = Renames(((b, a) for a, b in _NAMES.items()), "ViTamin", "image-tower key")


def matches(state: StateDict) -> bool:
    """Whether ``state`` is open_clip's ViTamin layout (MBConv stem, GeGLU blocks)."""
    return (
        "visual.trunk.patch_embed.backbone.stem.conv1.weight" in state
        and "visual.trunk.blocks.0.mlp.w0.weight" in state
    )


def _split(state: StateDict) -> tuple[StateDict, StateDict]:
    """The keys outside the image tower (the same in both layouts), and the image tower's
    tensors by name under ``visual.``."""
    visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    return {k: v for k, v in state.items() if not k.startswith("visual.")}, visual


def to_native(state: StateDict) -> StateDict:
    """open_clip ViTamin state dict → clipforge's (text keys are the same)."""
    out, visual = _split(state)
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in visual.items():
        mlp = _TIMM_MLP.match(name)
        if mlp:
            fused = f"visual.transformer.resblocks.{mlp[1]}.mlp.c_fc.{mlp[3]}"
            halves.setdefault(fused, {})[mlp[2]] = value
        else:
            out["visual." + _TO_NATIVE(name)] = value
    for fused, parts in halves.items():
        if set(parts) != {_GATE, _VALUE}:
            raise KeyError(f"ViTamin state dict has only {sorted(parts)} of {fused!r}")
        out[fused] = torch.cat((parts[_GATE], parts[_VALUE]), dim=0)
    return out


def from_native(state: StateDict) -> StateDict:
    """clipforge ViTamin state dict → open_clip's (inverse of :func:`to_native`)."""
    out, visual = _split(state)
    for name, value in visual.items():
        mlp = _NATIVE_MLP.match(name)
        if mlp:
            block = f"visual.trunk.blocks.{mlp[1]}."
            gate, val = value.chunk(2, dim=0)
            out[block + _GATE + mlp[2]], out[block + _VALUE + mlp[2]] = gate, val
        else:
            out["visual." + _FROM_NATIVE(name)] = value
    return out


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip ``model_cfg`` naming a ``vitamin_*`` trunk → :class:`ClipConfig`.

    open_clip's ``image_size`` is the tower's (it sizes the preprocessing; timm builds the
    trunk at the size in its name): they must agree where the trunk has learned positions.
    """
    vision, text = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    name = vision.get("timm_model_name")
    if name not in VITAMIN_TRUNKS:
        raise ConfigError(f"not a timm ViTamin trunk: {name!r} (known: {sorted(VITAMIN_TRUNKS)})")
    trunk = VITAMIN_TRUNKS[name]
    if vision.get("timm_pool", "") != "" or vision.get("timm_proj", "linear") != "linear":
        raise ConfigError("ViTamin trunks keep their own pool and take open_clip's linear head")
    if vision.get("timm_proj_bias"):
        raise ConfigError("ViTamin towers with timm_proj_bias are not supported")
    size = vision.get("image_size", trunk.image_size)
    if trunk.pos_embed and size != trunk.image_size:
        raise ConfigError(f"{name} has positions for {trunk.image_size} px, not {size}")
    _reject_unsupported("text_cfg", text, _UNSUPPORTED_TEXT)
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"],
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        vision=replace(trunk, image_size=size),
        text=text_config_to_native(text),
    )


def _trunk_name(v: ViTaminVisionConfig) -> str:
    """The trunk built at ``v.image_size``; for the position-free XL trunks, which run at
    any size, the first one with the same weights where none has that size in its name."""
    same = [n for n, t in VITAMIN_TRUNKS.items() if replace(t, image_size=v.image_size) == v]
    exact = [n for n in same if VITAMIN_TRUNKS[n].image_size == v.image_size]
    if not same:
        raise ConfigError(f"no timm ViTamin trunk has this image tower ({v})")
    return (exact or same)[0]


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` of a ViTamin CLIP → open_clip ``model_cfg`` (trunk by name)."""
    v, t = cfg.vision, cfg.text
    if not isinstance(v, ViTaminVisionConfig) or not isinstance(t, TextConfig):
        raise ConfigError("not a ViTamin CLIP architecture")
    if cfg.norm_eps != 1e-5 or t.activation or t.norm_eps:
        raise ConfigError("open_clip's ViTamin CLIPs use one activation and eps 1e-5")
    quick = {"quick_gelu": True} if cfg.activation == "quick_gelu" else {}
    text = text_config_from_native(t)
    if text["mlp_ratio"] == 4.0:  # open_clip's configs leave the default out
        del text["mlp_ratio"]
    vision = {
        "timm_model_name": _trunk_name(v), "timm_model_pretrained": False, "timm_pool": "",
        "timm_proj": "linear", "timm_drop": 0.0, "timm_drop_path": 0.1,
        "image_size": v.image_size,
    }  # fmt: skip
    return {"embed_dim": cfg.embed_dim, "vision_cfg": vision, "text_cfg": text,
            "custom_text": True, **quick}  # fmt: skip


def _owns_config(model_cfg: dict[str, Any]) -> bool:
    return dict(model_cfg.get("vision_cfg") or {}).get("timm_model_name") in VITAMIN_TRUNKS


def _owns_model(cfg: ClipConfig) -> bool:
    return isinstance(cfg.vision, ViTaminVisionConfig)


#: this module defines the KeyTranslation functions (typed as such for the checker)
_LAYOUT = cast(KeyTranslation, sys.modules[__name__])
register_family(
    LayoutFamily.of("vitamin", _LAYOUT, owns_config=_owns_config, owns_model=_owns_model)
)
#: recognised before the timm ViT layout (45), whose ``matches`` also accepts these keys
FORMAT = CheckpointFormat.of_state_layout("open_clip_vitamin", _LAYOUT, priority=46)
