"""transformers ``Siglip2Model`` (SigLIP 2 NaFlex, ``model_type: siglip2``) ↔ clipforge.

The layout is ``SiglipModel``'s (:mod:`.siglip_hf_keys` does the renaming) except the patch
embedding, a ``Linear`` over flattened ``(row, col, channel)`` patches, which clipforge keeps
as the SigLIP tower's patch convolution; ``vision_config.num_patches`` (the square position
grid) becomes the NaFlex tower's ``image_size = sqrt(num_patches) · patch_size``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from ...configs import ClipConfig, ConfigError, SigLipNaFlexVisionConfig, SigLipVisionConfig
from . import siglip_hf_keys
from .base import CheckpointFormat, LayoutFamily, layout_of
from .hf import register_family
from .siglip_keys import read_tokenizer

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

_PATCH_HF = "vision_model.embeddings.patch_embedding.weight"
_PATCH = "visual.patch_embed.weight"


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` is a transformers ``Siglip2Model`` state dict (a linear patch embedding)."""
    patch = state.get(_PATCH_HF)
    return siglip_hf_keys.matches(state) and patch is not None and patch.ndim == 2


def to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``Siglip2Model`` state dict → clipforge's (NaFlex tower)."""
    out = siglip_hf_keys.to_native(state)
    if _PATCH in out:
        linear = out[_PATCH]
        width, flat = linear.shape
        patch = math.isqrt(flat // 3)
        if 3 * patch * patch != flat:
            raise ConfigError(f"{_PATCH_HF} has {flat} inputs: not 3 · patch² for a square patch")
        out[_PATCH] = linear.reshape(width, patch, patch, 3).permute(0, 3, 1, 2).contiguous()
    return out


def from_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """clipforge NaFlex SigLIP state dict → transformers ``Siglip2Model``'s."""
    out = siglip_hf_keys.from_native(state)
    if _PATCH_HF in out:
        conv = out[_PATCH_HF]
        out[_PATCH_HF] = conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1).contiguous()
    return out


def config_to_native(hf: dict[str, Any]) -> ClipConfig:
    """A ``Siglip2Config`` dict → :class:`ClipConfig` with a NaFlex image tower."""
    if hf.get("model_type") != "siglip2":
        raise ConfigError(f"not a SigLIP 2 config: model_type {hf.get('model_type')!r}")
    vision = dict(hf.get("vision_config") or {})
    patch, positions = vision.get("patch_size", 16), vision.get("num_patches", 256)
    grid = math.isqrt(positions)
    if not isinstance(patch, int) or grid * grid != positions:
        raise ConfigError(
            f"vision_config needs an int patch_size and a square num_patches, got {patch!r} "
            f"and {positions!r}"
        )
    vision["image_size"] = grid * patch
    cfg = siglip_hf_keys.config_to_native({**hf, "model_type": "siglip", "vision_config": vision})
    fields = {f.name: getattr(cfg.vision, f.name) for f in dataclasses.fields(cfg.vision)}
    return dataclasses.replace(cfg, vision=SigLipNaFlexVisionConfig(**fields))


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` of a NaFlex SigLIP model → a ``Siglip2Config`` dict."""
    v = cfg.vision
    if not isinstance(v, SigLipNaFlexVisionConfig):
        raise ConfigError("not a SigLIP 2 NaFlex architecture")
    fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    hf = siglip_hf_keys.config_from_native(
        dataclasses.replace(cfg, vision=SigLipVisionConfig(**fields))
    )
    vision = hf["vision_config"]
    del vision["image_size"]
    vision["num_patches"] = v.grid_size**2
    return {**hf, "model_type": "siglip2", "architectures": ["Siglip2Model"]}


register_family(
    LayoutFamily.of(
        "siglip2", layout_of(__name__),
        owns_config=lambda config_json: config_json.get("model_type") == "siglip2",
        owns_model=lambda cfg: isinstance(cfg.vision, SigLipNaFlexVisionConfig),
        read_tokenizer=read_tokenizer,
    )
)  # fmt: skip

#: bare ``Siglip2Model`` state dicts, recognised before ``SiglipModel``'s
FORMAT = CheckpointFormat.of_state_layout("hf_siglip2", layout_of(__name__), priority=13)
