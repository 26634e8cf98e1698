"""open_clip's Swin CLIP (``timm_model_name: swin_base_patch4_window7_224``): config
translation both ways; the weights need no renaming beyond the text tower's.

open_clip builds it as ``CLIP`` (OpenAI's text keys at the top level) with the timm trunk
under ``visual.trunk.`` and its projection at ``visual.head.proj``.
:class:`~clipforge.models.swin.SwinTower` keeps those image-tower names, so the state-dict
translation is :mod:`.openai`'s and bare open_clip Swin state dicts are detected by it.
"""

from __future__ import annotations

from typing import Any

from ...configs import ClipConfig, ConfigError, TextConfig
from ...configs.swin import SWIN_TRUNKS, SwinConfig
from . import openai
from .base import LayoutFamily
from .open_clip import (
    _UNSUPPORTED_TEXT,
    _reject_unsupported,
    register_family,
    text_config_from_native,
    text_config_to_native,
)

__all__ = ["config_from_native", "config_to_native"]

#: the ``vision_cfg`` open_clip's Swin config has besides the trunk name and image size
_HEAD = {"timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear"}


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip Swin ``model_cfg`` → :class:`ClipConfig`."""
    vision, text = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    name = vision.get("timm_model_name")
    if name not in SWIN_TRUNKS:
        raise ConfigError(
            f"not a supported timm Swin trunk: {name!r} (known: {sorted(SWIN_TRUNKS)})"
        )
    if (
        vision.get("timm_pool", "") not in ("", "avg")
        or vision.get("timm_proj", "linear") != "linear"
    ):
        raise ConfigError("Swin towers pool with timm's average and take open_clip's linear head")
    if vision.get("timm_proj_bias"):
        raise ConfigError("Swin towers with timm_proj_bias are not supported")
    trunk = SWIN_TRUNKS[name]
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
    """:class:`ClipConfig` of a Swin CLIP → open_clip ``model_cfg`` (trunk by name)."""
    v, t = cfg.vision, cfg.text
    if not isinstance(v, SwinConfig) or not isinstance(t, TextConfig):
        raise ConfigError("not a Swin CLIP architecture")
    name = next((n for n, trunk in SWIN_TRUNKS.items() if trunk == v), None)
    if name is None:
        raise ConfigError(f"no timm Swin trunk has this image tower ({v})")
    if cfg.norm_eps != 1e-5 or t.activation or t.norm_eps:
        raise ConfigError("open_clip's CLIP uses one activation and LayerNorm eps 1e-5")
    vision = {"timm_model_name": name, **_HEAD, "image_size": v.image_size}
    out: dict[str, Any] = {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": vision,
        "text_cfg": text_config_from_native(t),
    }
    if cfg.activation == "quick_gelu":
        out["quick_gelu"] = True
    return out


def _owns_config(model_cfg: dict[str, Any]) -> bool:
    return dict(model_cfg.get("vision_cfg") or {}).get("timm_model_name") in SWIN_TRUNKS


FAMILY = register_family(
    LayoutFamily(
        name="swin",
        owns_config=_owns_config,
        owns_model=lambda cfg: isinstance(cfg.vision, SwinConfig),
        config_to_native=config_to_native,
        config_from_native=config_from_native,
        to_native=openai.to_native,
        from_native=openai.from_native,
    )
)
