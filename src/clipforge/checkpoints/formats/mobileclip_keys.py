"""MobileCLIP / MobileCLIP2 (FastViT MCi image towers) in open_clip's layout ↔ clipforge's.

open_clip builds these as ``CustomTextCLIP`` with a timm ``fastvit_mci*`` trunk under
``visual.trunk.`` (its classifier head ``head.fc`` is the projection) and CLIP's text
transformer under ``text.`` (without the causal mask). clipforge's FastViT uses timm's
module names, so the image keys map by dropping ``trunk.``; the text keys are identical.
Both the training form and the folded (``reparam_conv``) form map the same way.
"""

from __future__ import annotations

import re
from typing import Any

from ...configs import ClipConfig, ConfigError, FastViTConfig, TextConfig
from .base import CheckpointFormat, LayoutFamily, StateDict
from .open_clip import register_family, text_config_from_native, text_config_to_native

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

_TIMM, _NATIVE = "visual.trunk.", "visual."
_TRUNK_NAME = re.compile(r"^fastvit_mci(\d)$")
_R, _A = "repmixer", "attention"
#: timm's ``fastvit_mci*`` variants as :class:`FastViTConfig` fields (timm's fastvit.py)
TRUNKS: dict[str, dict[str, Any]] = {
    "fastvit_mci0": dict(layers=(2, 6, 10, 2), embed_dims=(64, 128, 256, 512), mlp_ratio=3.0,
                         token_mixers=(_R, _R, _R, _A), se_downsamples=(False, False, True, True)),
    "fastvit_mci1": dict(layers=(4, 12, 20, 4), embed_dims=(64, 128, 256, 512), mlp_ratio=3.0,
                         token_mixers=(_R, _R, _R, _A), se_downsamples=(False, False, True, True)),
    "fastvit_mci2": dict(layers=(4, 12, 24, 4), embed_dims=(80, 160, 320, 640), mlp_ratio=3.0,
                         token_mixers=(_R, _R, _R, _A), se_downsamples=(False, False, True, True)),
    "fastvit_mci3": dict(layers=(2, 12, 24, 4, 2), embed_dims=(96, 192, 384, 768, 1536),
                         mlp_ratio=4.0, token_mixers=(_R, _R, _R, _A, _A),
                         se_downsamples=(False,) * 5, attention_norm="layernorm",
                         stem_scale_branch=False),
    "fastvit_mci4": dict(layers=(2, 12, 24, 4, 4), embed_dims=(128, 256, 512, 1024, 2048),
                         mlp_ratio=4.0, token_mixers=(_R, _R, _R, _A, _A),
                         se_downsamples=(False,) * 5, attention_norm="layernorm",
                         stem_scale_branch=False),
}  # fmt: skip


def matches(state: StateDict) -> bool:
    """Whether ``state`` is an open_clip MobileCLIP state dict (a FastViT trunk, either form)."""
    return any(
        k.startswith(f"{_TIMM}stem.0.")
        and k.endswith(("conv_kxk.0.conv.weight", "reparam_conv.weight"))
        for k in state
    )


def to_native(state: StateDict) -> StateDict:
    """open_clip MobileCLIP state dict → clipforge's (image keys lose ``trunk.``)."""
    return {(_NATIVE + k.removeprefix(_TIMM) if k.startswith(_TIMM) else k): v
            for k, v in state.items()}  # fmt: skip


def from_native(state: StateDict) -> StateDict:
    """clipforge MobileCLIP state dict → open_clip's (inverse of :func:`to_native`)."""
    return {(_TIMM + k.removeprefix(_NATIVE) if k.startswith(_NATIVE) else k): v
            for k, v in state.items()}  # fmt: skip


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip MobileCLIP ``model_cfg`` → :class:`ClipConfig`."""
    vision = dict(model_cfg.get("vision_cfg") or {})
    name = str(vision.get("timm_model_name"))
    if name not in TRUNKS:
        raise ConfigError(f"not a FastViT MCi timm trunk: {name!r}")
    if vision.get("timm_pool", "avg") != "avg" or vision.get("timm_proj") not in (None, ""):
        raise ConfigError("open_clip's MobileCLIP trunks pool 'avg' with timm_proj null")
    size = vision.get("image_size", 256)
    size = size[0] if isinstance(size, list | tuple) else size
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"],
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        vision=FastViTConfig(image_size=int(size), **TRUNKS[name]),
        text=text_config_to_native(dict(model_cfg.get("text_cfg") or {})),
    )


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` of a MobileCLIP model → open_clip ``model_cfg`` (timm trunk by name)."""
    v, t = cfg.vision, cfg.text
    if not isinstance(v, FastViTConfig) or not isinstance(t, TextConfig):
        raise ConfigError("not a MobileCLIP (FastViT) architecture")
    fields = {k: getattr(v, k) for k in TRUNKS["fastvit_mci0"]}
    name = next((n for n, trunk in TRUNKS.items() if _same(trunk, v)), None)
    if name is None or v.head_dim != 32:
        raise ConfigError(f"no timm fastvit_mci trunk has this image tower ({fields})")
    if cfg.norm_eps != 1e-5 or cfg.activation != "gelu":
        raise ConfigError("open_clip's MobileCLIP models use GELU and LayerNorm eps 1e-5")
    return {
        "embed_dim": cfg.embed_dim,
        "custom_text": True,
        "vision_cfg": {
            "timm_model_name": name, "timm_model_pretrained": False, "timm_pool": "avg",
            "timm_proj": None, "timm_drop": 0.0, "timm_drop_path": 0.0,
            "image_size": v.image_size,
        },
        "text_cfg": text_config_from_native(t),
    }  # fmt: skip


def _same(trunk: dict[str, Any], v: FastViTConfig) -> bool:
    defaults = {"attention_norm": "batchnorm", "stem_scale_branch": True}
    return all(getattr(v, k) == val for k, val in {**defaults, **trunk}.items())


def _owns_config(model_cfg: dict[str, Any]) -> bool:
    vision = dict(model_cfg.get("vision_cfg") or {})
    return _TRUNK_NAME.match(str(vision.get("timm_model_name"))) is not None


register_family(
    LayoutFamily(
        name="mobileclip",
        owns_config=_owns_config,
        owns_model=lambda cfg: isinstance(cfg.vision, FastViTConfig),
        config_to_native=config_to_native,
        config_from_native=config_from_native,
        to_native=to_native,
        from_native=from_native,
    )
)

#: bare open_clip MobileCLIP state dicts (FastViT trunk under ``visual.trunk.``), recognised
#: before clipforge's own layout (they share its ``text.*`` keys)
FORMAT = CheckpointFormat(
    name="open_clip_mobileclip", matches=matches, to_native=to_native, from_native=from_native,
    priority=40,
)  # fmt: skip
