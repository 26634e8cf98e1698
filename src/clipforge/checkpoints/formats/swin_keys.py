"""open_clip's Swin CLIP (``timm_model_name: swin_base_patch4_window7_224``): its layout
family in open_clip directories.

open_clip builds it as ``CLIP`` (OpenAI's text keys at the top level) with the timm trunk
under ``visual.trunk.`` and its projection at ``visual.head.proj``.
:class:`~clipforge.models.swin.SwinTower` keeps those image-tower names, so the state-dict
translation is :mod:`.openai`'s (and bare open_clip Swin state dicts are detected by it);
the config translation is :mod:`.timm_trunk`'s over :data:`SWIN_TRUNKS`.
"""

from __future__ import annotations

from functools import partial

from ...configs.swin import SWIN_TRUNKS, SwinConfig
from . import openai
from .base import LayoutFamily
from .open_clip import register_family
from .timm_trunk import trunk_config_from_native, trunk_config_to_native

__all__ = ["config_from_native", "config_to_native"]

config_to_native = partial(trunk_config_to_native, trunks=SWIN_TRUNKS)
config_from_native = partial(trunk_config_from_native, trunks=SWIN_TRUNKS)

FAMILY = register_family(
    LayoutFamily(
        name="swin",
        owns_config=lambda c: dict(c.get("vision_cfg") or {}).get("timm_model_name") in SWIN_TRUNKS,
        owns_model=lambda cfg: isinstance(cfg.vision, SwinConfig),
        config_to_native=config_to_native,
        config_from_native=config_from_native,
        to_native=openai.to_native,
        from_native=openai.from_native,
    )
)
