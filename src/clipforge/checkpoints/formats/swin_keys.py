"""open_clip's Swin CLIP (``timm_model_name: swin_base_patch4_window7_224``): its layout
family in open_clip directories.

open_clip builds it as ``CLIP`` (OpenAI's text keys at the top level) with the timm trunk
under ``visual.trunk.`` and its projection at ``visual.head.proj``.
:class:`~clipforge.models.swin.SwinTower` keeps those image-tower names, so the state-dict
translation is :mod:`.openai`'s (and bare open_clip Swin state dicts are detected by it);
the config translation is :class:`~.timm_trunks.LinearHeadTrunks` over :data:`SWIN_TRUNKS`.
"""

from __future__ import annotations

from ...configs.swin import SWIN_TRUNKS, SwinConfig
from . import openai
from .base import LayoutFamily, layout_of
from .open_clip import register_family
from .timm_trunks import LinearHeadTrunks, owns_trunks

__all__ = ["config_from_native", "config_to_native"]

TRUNKS = LinearHeadTrunks(SWIN_TRUNKS, "Swin")
config_to_native = TRUNKS.config_to_native
config_from_native = TRUNKS.config_from_native

to_native, from_native = openai.to_native, openai.from_native
FAMILY = register_family(
    LayoutFamily.of("swin", layout_of(__name__), owns_config=owns_trunks(SWIN_TRUNKS),
                    owns_model=lambda cfg: isinstance(cfg.vision, SwinConfig))
)  # fmt: skip
