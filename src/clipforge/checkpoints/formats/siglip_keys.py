"""SigLIP key mapping: open_clip's layout (timm trunk under ``visual.trunk.``) ↔ clipforge's,
and open_clip's SigLIP ``model_cfg`` ↔ :class:`ClipConfig`.

Pure functions on state dicts and config dicts; no I/O. The text tower, ``logit_scale`` and ``logit_bias``
have the same names in both layouts; the image tower is renamed block by block, and two
tensors change shape: timm's ``pos_embed`` ``(1, L, C)`` ↔ ``positional_embedding``
``(L, C)`` and the pooling query ``latent`` ``(1, 1, C)`` ↔ ``(1, C)``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ...configs import ClipConfig, ConfigError, SigLipTextConfig, SigLipVisionConfig
from ...tokenizer.sentencepiece import SentencePieceTokenizer
from . import timm_names
from .base import CheckpointFormat, LayoutFamily, layout_of
from .open_clip import register_family, text_geometry
from .renames import KeyTable

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

_TIMM = "visual.trunk."
#: no class token, no pre-norm: timm's ViT names and its MAP head (:mod:`.timm_names`)
_TABLE = KeyTable(
    _TIMM, "visual.", timm_names.TRUNK + timm_names.MAP_POOL, "SigLIP",
    unbatched=timm_names.UNBATCHED, where="image-tower key",
)  # fmt: skip
to_native = _TABLE.to_native
from_native = _TABLE.from_native


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` is an open_clip SigLIP state dict (timm trunk with a MAP head)."""
    return f"{_TIMM}attn_pool.latent" in state and f"{_TIMM}pos_embed" in state


# ----------------------------------------------------------------------------- configs
#: timm SigLIP trunk families: (width, layers, heads, mlp_ratio)
_FAMILIES: dict[str, tuple[int, int, int, float]] = {
    "base": (768, 12, 12, 4.0),
    "large": (1024, 24, 16, 4.0),
    "so400m": (1152, 27, 16, 3.7362),
    "giantopt": (1536, 40, 16, 4.0),
}
#: the timm SigLIP trunks built with tanh-GELU (the others use exact GELU)
_TANH_TRUNKS = frozenset({
    "vit_base_patch32_siglip_256", "vit_large_patch16_siglip_512",
    "vit_so400m_patch16_siglip_256", "vit_so400m_patch16_siglip_384",
    "vit_so400m_patch16_siglip_512", "vit_giantopt_patch16_siglip_256",
    "vit_giantopt_patch16_siglip_384",
})  # fmt: skip
_TRUNK_NAME = re.compile(r"^vit_(base|large|so400m|giantopt)_patch(\d+)_siglip_(\d+)$")


def vision_to_native(vision: dict[str, Any]) -> SigLipVisionConfig:
    """open_clip's ``vision_cfg`` of a timm SigLIP trunk → :class:`SigLipVisionConfig`."""
    name = str(vision.get("timm_model_name"))
    found = _TRUNK_NAME.match(name)
    if found is None or vision.get("timm_pool") != "map":
        raise ConfigError(f"not a SigLIP timm trunk with a MAP head: {name!r}")
    if vision.get("timm_proj", "linear") != "none":  # open_clip cannot build others with 'map'
        raise ConfigError("a SigLIP timm trunk's head must be timm_proj 'none'")
    width, layers, heads, mlp_ratio = _FAMILIES[found[1]]
    return SigLipVisionConfig(
        image_size=int(found[3]),  # open_clip builds the trunk at its name's resolution
        patch_size=int(found[2]),
        width=width,
        layers=layers,
        heads=heads,
        mlp_ratio=mlp_ratio,
        activation="gelu_tanh" if name in _TANH_TRUNKS else None,  # None: the model-wide gelu
    )


def _text_to_native(text: dict[str, Any]) -> SigLipTextConfig:
    eps = (text.get("norm_kwargs") or {}).get("eps", 1e-5)
    if not text.get("no_causal_mask") or text.get("pool_type") != "last" or eps != 1e-6:
        raise ConfigError(
            "SigLIP text needs no_causal_mask, pool_type 'last' and LayerNorm eps 1e-6"
        )
    tanh = (text.get("act_kwargs") or {}).get("approximate") == "tanh"
    proj = "none" if text.get("proj_type") == "none" else "linear"
    if proj == "linear" and not text.get("proj_bias"):
        raise ConfigError("SigLIP text projection must be biased (proj_bias: true)")
    return SigLipTextConfig(
        **text_geometry(text),
        activation="gelu_tanh" if tanh else None,
        proj=proj,
    )


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip SigLIP ``model_cfg`` (as in its JSON configs and hub directories) →
    :class:`ClipConfig`."""
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"],
        vision=vision_to_native(dict(model_cfg.get("vision_cfg", {}))),
        text=_text_to_native(dict(model_cfg.get("text_cfg", {}))),
        norm_eps=1e-6,
        init_logit_bias=model_cfg.get("init_logit_bias"),
    )


def vision_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """The open_clip ``vision_cfg`` (a timm trunk by name) of a SigLIP image tower."""
    v = cfg.vision
    if not isinstance(v, SigLipVisionConfig):
        raise ConfigError("not a SigLIP image tower")
    shape = (v.width, v.layers, v.heads, v.mlp_ratio)
    family = next((k for k, dims in _FAMILIES.items() if dims == shape), None)
    name = f"vit_{family}_patch{v.patch_size}_siglip_{v.image_size}"
    vision_act = v.activation or cfg.activation
    if family is None or vision_act != ("gelu_tanh" if name in _TANH_TRUNKS else "gelu"):
        raise ConfigError(f"no timm SigLIP trunk has this image tower ({v})")
    if v.proj:
        raise ConfigError("open_clip's SigLIP models have no image projection (vision.proj)")
    return {
        "image_size": v.image_size, "timm_model_name": name, "timm_model_pretrained": False,
        "timm_pool": "map", "timm_proj": "none",
    }  # fmt: skip


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` of a SigLIP model → open_clip ``model_cfg`` (a timm trunk by name)."""
    t = cfg.text
    if not isinstance(cfg.vision, SigLipVisionConfig) or not isinstance(t, SigLipTextConfig):
        raise ConfigError("not a SigLIP architecture")
    vision = vision_from_native(cfg)
    text_act = t.activation or cfg.activation
    if cfg.norm_eps != 1e-6 or text_act not in ("gelu", "gelu_tanh"):
        raise ConfigError("open_clip SigLIP text towers use LayerNorm eps 1e-6 and GELU")
    text: dict[str, Any] = {
        "context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
        "heads": t.heads, "layers": t.layers, "mlp_ratio": t.mlp_ratio,
        "no_causal_mask": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6},
    }  # fmt: skip
    text.update({"proj_type": "none"} if t.proj == "none" else {"proj_bias": True})
    if text_act == "gelu_tanh":
        text["act_kwargs"] = {"approximate": "tanh"}
    return {
        "embed_dim": cfg.embed_dim,
        "init_logit_bias": cfg.init_logit_bias,
        "custom_text": True,
        "vision_cfg": vision,
        "text_cfg": text,
    }


def read_tokenizer(directory: Path) -> Any:
    """The checkpoint's SentencePiece ``tokenizer.json``, else its ``spiece.model``
    (Hugging Face SigLIP directories); ``None`` when it ships neither."""
    if not any((directory / name).is_file() for name in ("tokenizer.json", "spiece.model")):
        return None

    try:
        return SentencePieceTokenizer.from_dir(directory)
    except ImportError as err:  # spiece.model without transformers: the weights still load
        warnings.warn(f"{err}; model.tokenize will ask for a tokenizer", stacklevel=2)
        return None


def _owns_config(model_cfg: dict[str, Any]) -> bool:
    vision = dict(model_cfg.get("vision_cfg") or {})
    if (model_cfg.get("text_cfg") or {}).get("hf_model_name"):
        return False  # an HF text tower (NLLB-SigLIP): the hf_text family
    return _TRUNK_NAME.match(str(vision.get("timm_model_name"))) is not None


register_family(
    LayoutFamily.of(
        "siglip",
        layout_of(__name__),
        owns_config=_owns_config,
        owns_model=lambda cfg: (
            isinstance(cfg.vision, SigLipVisionConfig) and isinstance(cfg.text, SigLipTextConfig)
        ),
        read_tokenizer=read_tokenizer,
    )
)

#: bare open_clip SigLIP state dicts (timm trunk under ``visual.trunk.``), recognised before
#: clipforge's own layout (they share its ``text.*`` keys)
FORMAT = CheckpointFormat.of_state_layout("open_clip_siglip", layout_of(__name__), priority=40)
