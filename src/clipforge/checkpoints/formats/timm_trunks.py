"""What open_clip's timm-trunk families (EVA, Perception Encoder, timm ViT, ConvNeXt) share in
their ``model_cfg`` translation: a trunk is named by ``vision_cfg.timm_model_name``, the text
tower is CLIP's transformer (``text_cfg``), and saving names the trunk back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ...configs import ClipConfig, ConfigError, TextConfig
from .base import KeyTranslation, LayoutFamily
from .open_clip import (
    _UNSUPPORTED_TEXT,
    _reject_unsupported,
    text_config_from_native,
    text_config_to_native,
)

T = TypeVar("T")


def named_trunk(
    model_cfg: dict[str, Any], trunks: Mapping[str, T], unknown: str
) -> tuple[str, T, dict[str, Any], dict[str, Any]]:
    """``(name, trunk, vision_cfg, text_cfg)`` of a ``model_cfg`` whose trunk is one of
    ``trunks``; ``ConfigError("{unknown}: 'name' (known: ...)")`` otherwise."""
    vision, text = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    name = vision.get("timm_model_name")
    if not isinstance(name, str) or name not in trunks:
        raise ConfigError(f"{unknown}: {name!r} (known: {sorted(trunks)})")
    _reject_unsupported("text_cfg", text, _UNSUPPORTED_TEXT)
    return name, trunks[name], vision, text


def check_image_size(vision: dict[str, Any], name: str, size: int) -> None:
    """A trunk timm builds at one resolution (``ConfigError`` if ``vision_cfg`` asks another)."""
    if vision.get("image_size", size) != size:
        raise ConfigError(f"{name} is built at {size} px")


def check_custom_text(model_cfg: dict[str, Any], text: dict[str, Any], family: str) -> None:
    """open_clip's ``CustomTextCLIP`` text towers of these families: GELU, eps 1e-5."""
    if model_cfg.get("quick_gelu") or text.get("norm_kwargs") or text.get("act_kwargs"):
        raise ConfigError(f"{family} text towers use GELU and LayerNorm eps 1e-5")


def trunk_of(vision: Any, trunks: Mapping[str, Any], family: str) -> str:
    """The name of the trunk whose config equals ``vision`` (``ConfigError`` if none)."""
    name = next((n for n, trunk in trunks.items() if trunk == vision), None)
    if name is None:
        raise ConfigError(f"no timm {family} trunk has this image tower ({vision})")
    return name


def text_cfg_from_native(cfg: ClipConfig, family: str, *, custom_text: bool) -> dict[str, Any]:
    """open_clip ``text_cfg`` of these families' CLIP text tower, checked: one GELU and eps
    1e-5 for a ``CustomTextCLIP`` (``custom_text``), else one activation and eps 1e-5 for both
    towers (``CLIP``); argmax pooling either way."""
    t = cfg.text
    if not isinstance(t, TextConfig):
        raise ConfigError(f"not a {family} architecture")
    if custom_text:
        act, eps = t.activation or cfg.activation, t.norm_eps or cfg.norm_eps
        if eps != 1e-5 or act != "gelu" or t.eot_token_id is not None:
            raise ConfigError(
                f"open_clip {family} text towers use GELU, LayerNorm eps 1e-5, argmax pooling"
            )
    elif cfg.norm_eps != 1e-5 or t.eot_token_id is not None or t.activation or t.norm_eps:
        raise ConfigError(
            f"open_clip's {family} CLIPs use one activation, eps 1e-5, argmax pooling"
        )
    text = text_config_from_native(t)
    if t.mlp_ratio == 4.0:  # open_clip's default, left out as its configs do
        del text["mlp_ratio"]
    return text


def trunk_model_cfg(
    cfg: ClipConfig, vision: dict[str, Any], family: str, *, custom_text: bool
) -> dict[str, Any]:
    """open_clip ``model_cfg`` around a timm trunk's ``vision`` (``timm_model_pretrained``
    false, ``image_size`` added) and the checked text tower."""
    out: dict[str, Any] = {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {**vision, "timm_model_pretrained": False,
                       "image_size": cfg.vision.image_size},
        "text_cfg": text_cfg_from_native(cfg, family, custom_text=custom_text),
    }  # fmt: skip
    if custom_text:
        out["custom_text"] = True
    elif cfg.activation == "quick_gelu":
        out["quick_gelu"] = True
    return out


def owns_trunks(trunks: Mapping[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """``owns_config`` of a family: its ``vision_cfg.timm_model_name`` is one of ``trunks``."""
    return lambda model_cfg: (
        dict(model_cfg.get("vision_cfg") or {}).get("timm_model_name") in trunks
    )


@dataclass(frozen=True)
class CustomTextTrunks:
    """A family of timm trunks open_clip builds as ``CustomTextCLIP`` with CLIP's text tower
    (EVA-CLIP, PE-Core): the ``model_cfg`` translation both ways. ``trunks`` maps timm names
    to clipforge image-tower configs; ``family`` and ``kind`` name the models and their
    trunks in errors; ``pool``: the ``timm_pool`` they are built with (``timm_proj`` null)."""

    trunks: Mapping[str, Any]
    family: str
    kind: str
    pool: str

    def config_to_native(self, model_cfg: dict[str, Any]) -> ClipConfig:
        """open_clip ``model_cfg`` → :class:`ClipConfig` (the trunk by its timm name)."""
        name, trunk, vision, text = named_trunk(
            model_cfg, self.trunks, f"not a timm {self.kind} trunk"
        )
        if vision.get("timm_pool") != self.pool or vision.get("timm_proj") not in (None, ""):
            raise ConfigError(
                f"{self.kind} trunks pool with timm_pool {self.pool!r} and timm's head "
                "(timm_proj null)"
            )
        check_image_size(vision, name, trunk.image_size)
        check_custom_text(model_cfg, text, self.kind)
        return ClipConfig(
            embed_dim=model_cfg["embed_dim"], vision=trunk, text=text_config_to_native(text)
        )

    def config_from_native(self, cfg: ClipConfig) -> dict[str, Any]:
        """:class:`ClipConfig` → open_clip ``model_cfg`` (the trunk by its timm name)."""
        name = trunk_of(cfg.vision, self.trunks, self.kind)
        vision = {"timm_model_name": name, "timm_pool": self.pool, "timm_proj": None}
        return trunk_model_cfg(cfg, vision, self.family, custom_text=True)

    def owns_config(self, model_cfg: dict[str, Any]) -> bool:
        """Whether an open_clip ``model_cfg`` names one of these trunks."""
        return dict(model_cfg.get("vision_cfg") or {}).get("timm_model_name") in self.trunks

    def owns_model(self, cfg: ClipConfig) -> bool:
        """Whether a clipforge config has an image tower of these trunks' config class."""
        return any(isinstance(cfg.vision, type(trunk)) for trunk in self.trunks.values())

    def layout_family(self, name: str, layout: KeyTranslation) -> LayoutFamily:
        """The open_clip layout family ``name``: these configs, ``layout``'s state dicts."""
        return LayoutFamily.of(
            name, layout, owns_config=self.owns_config, owns_model=self.owns_model
        )


@dataclass(frozen=True)
class LinearHeadTrunks:
    """A family of timm trunks open_clip builds as ``CLIP`` (OpenAI's text keys) keeping the
    trunk's own pool (``timm_pool: ""``) under its bias-free ``linear`` head (timm ViT, Swin):
    the ``model_cfg`` translation both ways. ``kind`` names the trunks in errors."""

    trunks: Mapping[str, Any]
    kind: str

    def config_to_native(self, model_cfg: dict[str, Any]) -> ClipConfig:
        """open_clip ``model_cfg`` naming one of these trunks → :class:`ClipConfig`."""
        name, trunk, vision, text = named_trunk(
            model_cfg, self.trunks, f"not a supported timm {self.kind} trunk"
        )
        if vision.get("timm_pool", "") != "" or vision.get("timm_proj", "linear") != "linear":
            raise ConfigError(
                f"timm {self.kind} trunks keep their own pool and take open_clip's linear head"
            )
        check_image_size(vision, name, trunk.image_size)
        quick = bool(model_cfg.get("quick_gelu"))
        return ClipConfig(model_cfg["embed_dim"], trunk, text_config_to_native(text),
                          activation="quick_gelu" if quick else "gelu")  # fmt: skip

    def config_from_native(self, cfg: ClipConfig) -> dict[str, Any]:
        """:class:`ClipConfig` with one of these trunks → open_clip ``model_cfg``."""
        vision = {"timm_model_name": trunk_of(cfg.vision, self.trunks, self.kind),
                  "timm_pool": "", "timm_proj": "linear"}  # fmt: skip
        return trunk_model_cfg(cfg, vision, f"timm {self.kind}", custom_text=False)
