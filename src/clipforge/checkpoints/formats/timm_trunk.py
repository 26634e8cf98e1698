"""Config translation of open_clip's ``TimmModel`` towers that name a timm trunk
(``timm_model_name``) with its own pool and open_clip's bias-free linear head, for trunks
clipforge builds natively from a table ``{timm name: tower config}`` (Swin). The weights of
such towers keep open_clip's names; only the text tower's are renamed (:mod:`.openai`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...configs import ClipConfig, ConfigError, TextConfig
from .open_clip import (
    _UNSUPPORTED_TEXT,
    _reject_unsupported,
    text_config_from_native,
    text_config_to_native,
)

__all__ = ["trunk_config_from_native", "trunk_config_to_native"]

#: ``vision_cfg`` head options: (value when absent, the values accepted); ``"image_size"``
#: must also be the trunk's own
_HEAD_OPTIONS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "timm_pool": ("", ("", "avg")),
    "timm_proj": ("linear", ("linear",)),
    "timm_proj_bias": (False, (False,)),
}


def trunk_config_to_native(model_cfg: dict[str, Any], trunks: Mapping[str, Any]) -> ClipConfig:
    """open_clip ``model_cfg`` naming one of ``trunks`` → :class:`ClipConfig`."""
    vision = dict(model_cfg.get("vision_cfg") or {})
    text = dict(model_cfg.get("text_cfg") or {})
    name = vision.get("timm_model_name")
    trunk = trunks.get(name) if isinstance(name, str) else None
    if trunk is None:
        raise ConfigError(f"not a supported timm trunk: {name!r} (known: {sorted(trunks)})")
    options = {**_HEAD_OPTIONS, "image_size": (trunk.image_size, (trunk.image_size,))}
    odd = {k: vision.get(k, d) for k, (d, ok) in options.items() if vision.get(k, d) not in ok}
    if odd:
        raise ConfigError(f"{name}: open_clip vision_cfg {odd} is not supported by clipforge")
    _reject_unsupported("text_cfg", text, _UNSUPPORTED_TEXT)
    quick = bool(model_cfg.get("quick_gelu"))
    return ClipConfig(model_cfg["embed_dim"], trunk, text_config_to_native(text),
                      activation="quick_gelu" if quick else "gelu")  # fmt: skip


def trunk_config_from_native(cfg: ClipConfig, trunks: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`ClipConfig` whose image tower is one of ``trunks`` → open_clip ``model_cfg``."""
    name = next((n for n, trunk in trunks.items() if trunk == cfg.vision), None)
    if name is None:
        raise ConfigError(f"no timm trunk of {sorted(trunks)} has this image tower ({cfg.vision})")
    t = cfg.text
    if not isinstance(t, TextConfig) or cfg.norm_eps != 1e-5 or t.activation or t.norm_eps:
        raise ConfigError("open_clip's CLIP has CLIP's text tower, one activation, eps 1e-5")
    head = {k: default for k, (default, _) in _HEAD_OPTIONS.items() if k != "timm_proj_bias"}
    vision = {"timm_model_name": name, "timm_model_pretrained": False, **head,
              "image_size": cfg.vision.image_size}  # fmt: skip
    out = {"embed_dim": cfg.embed_dim, "vision_cfg": vision, "text_cfg": text_config_from_native(t)}
    return {**out, "quick_gelu": True} if cfg.activation == "quick_gelu" else out
