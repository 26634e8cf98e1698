"""MobileCLIP / MobileCLIP2 (FastViT MCi or ViT image towers) in open_clip's layout ↔ clipforge's.

open_clip builds these as ``CustomTextCLIP`` with a timm ``fastvit_mci*`` trunk under
``visual.trunk.`` (its classifier head ``head.fc`` is the projection) and CLIP's text
transformer under ``text.`` (without the causal mask). clipforge's FastViT uses timm's
module names, so the image keys map by dropping ``trunk.``; the text keys are identical.
The -B and -L-14 releases use timm ViT trunks: their blocks become clipforge's
``transformer.resblocks.*``, everything else keeps timm's name.
Both the training form and the folded (``reparam_conv``) form map the same way.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ...configs import ClipConfig, ConfigError, FastViTConfig, MobileCLIPViTConfig, TextConfig
from . import timm_names
from .base import CheckpointFormat, LayoutFamily, StateDict, layout_of
from .open_clip import register_family, text_config_from_native, text_config_to_native
from .renames import KeyTable

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


#: a ViT trunk's blocks get clipforge's names (:mod:`.timm_names`); every other key (FastViT
#: stages, the ViT's stem and norms) keeps timm's, moved from ``visual.trunk.`` to ``visual.``
_TABLE = KeyTable(
    _TIMM, _NATIVE, timm_names.BLOCKS, "MobileCLIP ViT", strict=False, where="image-tower key"
)
to_native = _TABLE.to_native
from_native = _TABLE.from_native


#: the timm ViT trunks of MobileCLIP-B / MobileCLIP2-B and MobileCLIP2-L-14
VIT_TRUNKS: dict[str, MobileCLIPViTConfig] = {
    "vit_base_mci_224": MobileCLIPViTConfig(),
    "vit_large_patch14_clip_224": MobileCLIPViTConfig(
        patch_size=14, width=1024, layers=24, heads=16, stem="patch", pre_norm=True,
        class_pos=True, norm_eps=1e-5,
    ),
}  # fmt: skip
_POOLS = {"fastvit": "avg", "vit": "token"}


def _vision_to_native(vision: dict[str, Any]) -> Any:  # FastViTConfig | MobileCLIPViTConfig
    name = str(vision.get("timm_model_name"))
    kind = "fastvit" if name in TRUNKS else "vit" if name in VIT_TRUNKS else None
    if kind is None:
        raise ConfigError(f"not a MobileCLIP timm trunk: {name!r}")
    if vision.get("timm_pool", _POOLS[kind]) != _POOLS[kind] or vision.get("timm_proj"):
        raise ConfigError(
            f"open_clip's MobileCLIP {name} trunk pools {_POOLS[kind]!r} with timm_proj null"
        )
    size = vision.get("image_size", 256 if kind == "fastvit" else 224)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    if kind == "fastvit":
        return FastViTConfig(image_size=size, **TRUNKS[name])
    return dataclasses.replace(VIT_TRUNKS[name], image_size=size)


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip MobileCLIP ``model_cfg`` → :class:`ClipConfig`."""
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"],
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        vision=_vision_to_native(dict(model_cfg.get("vision_cfg") or {})),
        text=text_config_to_native(dict(model_cfg.get("text_cfg") or {})),
    )


def _trunk_name(v: Any) -> tuple[str, str]:  # v: FastViTConfig | MobileCLIPViTConfig
    """The timm trunk that builds ``v`` and its pooling (``ConfigError`` if none does)."""
    if isinstance(v, MobileCLIPViTConfig):
        found = [n for n, t in VIT_TRUNKS.items() if t == dataclasses.replace(v, image_size=224)]
        if found:
            return found[0], "token"
    else:
        defaults = {"attention_norm": "batchnorm", "stem_scale_branch": True, "head_dim": 32}
        for name, trunk in TRUNKS.items():
            if all(getattr(v, k) == val for k, val in {**defaults, **trunk}.items()):
                return name, "avg"
    raise ConfigError(f"no timm trunk of open_clip's MobileCLIP models has this image tower ({v})")


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` of a MobileCLIP model → open_clip ``model_cfg`` (timm trunk by name)."""
    v, t = cfg.vision, cfg.text
    if not isinstance(v, FastViTConfig | MobileCLIPViTConfig) or not isinstance(t, TextConfig):
        raise ConfigError("not a MobileCLIP architecture")
    name, pool = _trunk_name(v)
    if cfg.norm_eps != 1e-5 or cfg.activation != "gelu":
        raise ConfigError("open_clip's MobileCLIP models use GELU and LayerNorm eps 1e-5")
    return {
        "embed_dim": cfg.embed_dim,
        "custom_text": True,
        "vision_cfg": {
            "timm_model_name": name, "timm_model_pretrained": False, "timm_pool": pool,
            "timm_proj": None, "timm_drop": 0.0, "timm_drop_path": 0.0,
            "image_size": v.image_size,
        },
        "text_cfg": text_config_from_native(t),
    }  # fmt: skip


def _owns_config(model_cfg: dict[str, Any]) -> bool:
    """MobileCLIP's trunks: ``fastvit_mci*``, and the ViTs only with a token-pooled head
    (other open_clip models may use ``vit_large_patch14_clip_224`` differently)."""
    vision = dict(model_cfg.get("vision_cfg") or {})
    name = str(vision.get("timm_model_name"))
    vit = name in VIT_TRUNKS and vision.get("timm_pool") == "token" and not vision.get("timm_proj")
    return _TRUNK_NAME.match(name) is not None or vit


register_family(
    LayoutFamily.of(
        "mobileclip", layout_of(__name__), owns_config=_owns_config,
        owns_model=lambda cfg: isinstance(cfg.vision, FastViTConfig | MobileCLIPViTConfig),
    )
)  # fmt: skip

#: bare open_clip MobileCLIP state dicts (FastViT trunk under ``visual.trunk.``), recognised
#: before clipforge's own layout (they share its ``text.*`` keys)
FORMAT = CheckpointFormat.of_state_layout("open_clip_mobileclip", layout_of(__name__), priority=40)
