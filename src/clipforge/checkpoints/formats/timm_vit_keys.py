"""timm ViT trunks with open_clip's linear head (``vit_medium_patch16_gap_256``,
``vit_relpos_medium_patch16_cls_224``): open_clip's layout ↔ clipforge's, and the
``model_cfg`` translation.

open_clip builds these as ``CLIP`` (OpenAI's text keys at the top level) with the timm
trunk under ``visual.trunk.`` and the projection at ``visual.head.proj``. Image-tower
tensors are renamed one to one (timm's ViT names, :mod:`.timm_names`); ``cls_token`` and
``pos_embed`` lose timm's batch dimension.
"""

from __future__ import annotations

import torch

from ...configs.timm_vit import TIMM_VIT_TRUNKS, TimmViTConfig
from . import openai, timm_names
from .base import CheckpointFormat, LayoutFamily, layout_of
from .open_clip import register_family
from .renames import KeyTable, prefixed
from .timm_trunks import LinearHeadTrunks, owns_trunks

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


#: the ``model_cfg`` translation (CLIP with open_clip's linear head over the trunk's pool)
TRUNKS = LinearHeadTrunks(TIMM_VIT_TRUNKS, "ViT")
config_to_native = TRUNKS.config_to_native
config_from_native = TRUNKS.config_from_native


register_family(
    LayoutFamily.of(
        "timm_vit", layout_of(__name__), owns_config=owns_trunks(TIMM_VIT_TRUNKS),
        owns_model=lambda cfg: isinstance(cfg.vision, TimmViTConfig),
    )
)  # fmt: skip

#: recognised before OpenAI's layout, which would otherwise take the ``visual.`` keys as-is
FORMAT = CheckpointFormat.of_state_layout("open_clip_timm_vit", layout_of(__name__), priority=45)
