"""Perception Encoder key mapping: open_clip's layout (timm ``vit_pe_core_*`` trunk under
``visual.trunk.``) ↔ clipforge's, and open_clip's PE ``model_cfg`` ↔ :class:`ClipConfig`.

Pure functions; no I/O. The text tower (``text.*``, open_clip's ``CustomTextCLIP``) and
``logit_scale`` keep their names. Image-tower tensors are renamed one to one (timm's ViT
names, :mod:`.timm_names`), and three lose timm's batch dimension: ``cls_token``
``(1, 1, C)``, ``pos_embed`` ``(1, L, C)`` and the pool's ``latent`` ``(1, 1, C)``.
"""

from __future__ import annotations

import torch

from ...configs.pe import PE_TRUNKS
from . import timm_names
from .base import CheckpointFormat, layout_of
from .open_clip import register_family
from .renames import KeyTable
from .timm_trunks import CustomTextTrunks

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

StateDict = dict[str, torch.Tensor]
_TIMM = "visual.trunk."
_TABLE = KeyTable(
    _TIMM, "visual.", timm_names.TRUNK + timm_names.MAP_POOL + (("head.", "proj."),),
    "Perception Encoder", unbatched=timm_names.UNBATCHED, where="image-tower key",
)  # fmt: skip
to_native = _TABLE.to_native
from_native = _TABLE.from_native


def matches(state: StateDict) -> bool:
    """Whether ``state`` is an open_clip PE state dict (timm trunk: pre-norm + MAP pool)."""
    return f"{_TIMM}norm_pre.weight" in state and f"{_TIMM}attn_pool.latent" in state


# ----------------------------------------------------------------------------- configs
_CONFIGS = CustomTextTrunks(PE_TRUNKS, family="PE", kind="PE-Core", pool="map")
config_to_native = _CONFIGS.config_to_native
config_from_native = _CONFIGS.config_from_native
register_family(_CONFIGS.layout_family("pe", layout_of(__name__)))

#: bare open_clip PE state dicts: recognised before SigLIP's (both have a MAP pool; only PE
#: has ``norm_pre``) and clipforge's own layout (they share its ``text.*`` keys)
FORMAT = CheckpointFormat.of_state_layout("open_clip_pe", layout_of(__name__), priority=45)
