"""timm ViT trunks with open_clip's linear head (``vit_medium_patch16_gap_256``,
``vit_relpos_medium_patch16_cls_224``): open_clip's layout ↔ clipforge's, and the
``model_cfg`` translation.

open_clip builds these as ``CLIP`` (OpenAI's text keys at the top level) with the timm
trunk under ``visual.trunk.`` and the projection at ``visual.head.proj``. Image-tower
tensors are renamed one to one (timm's ViT names, :mod:`.timm_names`); ``cls_token`` and
``pos_embed`` lose timm's batch dimension.
"""

from __future__ import annotations

from typing import Any

import torch

from ...configs import ClipConfig, ConfigError
from ...configs.timm_vit import TIMM_VIT_TRUNKS, TimmViTConfig
from . import openai, timm_names
from .base import CheckpointFormat, LayoutFamily, layout_of
from .open_clip import register_family, text_config_to_native
from .renames import KeyTable, prefixed
from .timm_trunks import check_image_size, named_trunk, owns_trunks, trunk_model_cfg, trunk_of

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

StateDict = dict[str, torch.Tensor]
#: works under ``visual.``: the trunk under ``trunk.``, open_clip's head at ``head.proj``
_TABLE = KeyTable(
    "visual.", "visual.", prefixed("trunk.", "", timm_names.TRUNK) + (("head.proj.", "proj."),),
    "timm ViT", unbatched=timm_names.UNBATCHED, where="image-tower key",
)  # fmt: skip


def matches(state: StateDict) -> bool:
    """Whether ``state`` is open_clip's timm ViT + linear head layout."""
    return "visual.head.proj.weight" in state and "visual.trunk.blocks.0.attn.qkv.weight" in state


def to_native(state: StateDict) -> StateDict:
    """open_clip state dict → clipforge's (text keys as :mod:`.openai` renames them)."""
    return _TABLE.to_native(openai.to_native(state))


def from_native(state: StateDict) -> StateDict:
    """clipforge state dict → open_clip's (inverse of :func:`to_native`)."""
    return openai.from_native(_TABLE.from_native(state))


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip ``model_cfg`` naming one of these trunks → :class:`ClipConfig`."""
    name, trunk, vision, text = named_trunk(
        model_cfg, TIMM_VIT_TRUNKS, "not a supported timm ViT trunk"
    )
    if vision.get("timm_pool", "") != "" or vision.get("timm_proj", "linear") != "linear":
        raise ConfigError("timm ViT trunks keep their own pool and take open_clip's linear head")
    check_image_size(vision, name, trunk.image_size)
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"],
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        vision=trunk,
        text=text_config_to_native(text),
    )


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` with one of these trunks → open_clip ``model_cfg``."""
    if not isinstance(cfg.vision, TimmViTConfig):
        raise ConfigError("not a timm ViT architecture")
    vision = {"timm_model_name": trunk_of(cfg.vision, TIMM_VIT_TRUNKS, "ViT"),
              "timm_pool": "", "timm_proj": "linear"}  # fmt: skip
    return trunk_model_cfg(cfg, vision, "timm ViT", custom_text=False)


register_family(
    LayoutFamily.of(
        "timm_vit", layout_of(__name__), owns_config=owns_trunks(TIMM_VIT_TRUNKS),
        owns_model=lambda cfg: isinstance(cfg.vision, TimmViTConfig),
    )
)  # fmt: skip

#: recognised before OpenAI's layout, which would otherwise take the ``visual.`` keys as-is
FORMAT = CheckpointFormat.of_state_layout("open_clip_timm_vit", layout_of(__name__), priority=45)
