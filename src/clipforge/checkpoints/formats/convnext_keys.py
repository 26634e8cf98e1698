"""LAION's ConvNeXt CLIPs in open_clip's layout: config translation (``timm_model_name``
``convnext_*``) both ways; the weights need no renaming beyond the text tower's.

open_clip builds these as ``CLIP`` (OpenAI's text keys at the top level) with a timm trunk
under ``visual.trunk.`` and its projection under ``visual.head.``. clipforge's
:class:`~clipforge.models.convnext.ConvNextTower` keeps those image-tower names, so the
state-dict translation is :mod:`.openai`'s (text keys under ``text.``) and bare open_clip
ConvNeXt state dicts are detected by that format.
"""

from __future__ import annotations

from typing import Any

from ...configs import ClipConfig, ConfigError
from ...configs.convnext import CONVNEXT_TRUNKS, ConvNextVisionConfig
from . import openai
from .base import LayoutFamily
from .open_clip import register_family, text_config_to_native
from .timm_trunks import named_trunk, owns_trunks, trunk_model_cfg

__all__ = ["config_from_native", "config_to_native"]


def _trunk_name(v: ConvNextVisionConfig) -> str:
    for name, (depths, dims, eps) in CONVNEXT_TRUNKS.items():
        if (v.depths, v.dims, v.norm_eps) == (depths, dims, eps) and _plain(v):
            return name
    raise ConfigError(f"no timm ConvNeXt trunk has this image tower ({v})")


def _plain(v: ConvNextVisionConfig) -> bool:
    """timm's defaults for everything a trunk name does not set."""
    return (v.patch_size, v.kernel_size, v.mlp_ratio) == (4, 7, 4.0)


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip ConvNeXt ``model_cfg`` → :class:`ClipConfig`."""
    _, (depths, dims, eps), vision, text = named_trunk(
        model_cfg, CONVNEXT_TRUNKS, "not a timm ConvNeXt trunk"
    )
    head = vision.get("timm_proj", "linear")
    if vision.get("timm_pool", "") not in ("", "avg") or head not in ("linear", "mlp"):
        raise ConfigError(
            f"ConvNeXt towers pool with timm's head and project with 'linear' or 'mlp' "
            f"(got timm_pool={vision.get('timm_pool')!r}, timm_proj={head!r})"
        )
    if vision.get("timm_proj_bias"):
        raise ConfigError("ConvNeXt towers with timm_proj_bias are not supported")
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"],
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        vision=ConvNextVisionConfig(
            image_size=vision.get("image_size", 224),
            depths=depths,
            dims=dims,
            head=head,
            norm_eps=eps,
        ),  # fmt: skip
        text=text_config_to_native(text),
    )


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` of a ConvNeXt CLIP → open_clip ``model_cfg`` (trunk by name)."""
    v = cfg.vision
    if not isinstance(v, ConvNextVisionConfig):
        raise ConfigError("not a ConvNeXt CLIP architecture")
    vision = {"timm_model_name": _trunk_name(v), "timm_pool": "", "timm_proj": v.head,
              "timm_drop": 0.0, "timm_drop_path": 0.1}  # fmt: skip
    return trunk_model_cfg(cfg, vision, "ConvNeXt", custom_text=False)


FAMILY = register_family(
    LayoutFamily(
        name="convnext",
        owns_config=owns_trunks(CONVNEXT_TRUNKS),
        owns_model=lambda cfg: isinstance(cfg.vision, ConvNextVisionConfig),
        config_to_native=config_to_native,
        config_from_native=config_from_native,
        to_native=openai.to_native,
        from_native=openai.from_native,
    )
)
