"""open_clip checkpoints: OpenAI key layout plus ``open_clip_config.json`` for hub dirs.

open_clip has no key layout of its own: its ``CLIP`` models use OpenAI's (so its state
dicts are detected and translated by :mod:`.openai`), and its ``CustomTextCLIP`` models
put the text tower under ``text.``, as clipforge does. This format owns the directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...configs import ClipConfig, ConfigError, ResNetConfig, TextConfig, ViTConfig
from ...configs.model_config import tower_to_dict
from ...preprocess import PreprocessConfig
from ..directory import config_errors, find_weights, read_json, write_directory
from ..errors import CheckpointError
from ..reader import read_state_dict
from . import openai
from .base import CheckpointFormat, Families, LoadedCheckpoint, StateDict
from .registry import to_native_state

NAME = "open_clip"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_UNSUPPORTED_VISION = (
    "timm_model_name",
    "attentional_pool",
    "qk_norm",
    "scaled_cosine_attn",
    "scale_heads",
    "scale_attn",
    "scale_fc",
)
_UNSUPPORTED_TEXT = (
    "hf_model_name",
    "ls_init_value",
    "pad_id",
    "embed_cls",
    "proj_bias",
)


def _reject_unsupported(section: str, cfg: dict[str, Any], keys: tuple[str, ...]) -> None:
    used = [k for k in keys if cfg.get(k)]
    if used:
        raise ConfigError(f"open_clip {section} options {used} are not supported by clipforge yet")


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip ``model_cfg`` (as in its JSON configs) → :class:`ClipConfig`."""
    vision, text = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    _reject_unsupported("vision_cfg", vision, _UNSUPPORTED_VISION)
    _reject_unsupported("text_cfg", text, _UNSUPPORTED_TEXT)
    head_width = vision.get("head_width", 64)
    width = vision.get("width", 768)
    layers = vision.get("layers", 12)
    if isinstance(layers, list | tuple):
        vision_cfg: ViTConfig | ResNetConfig = ResNetConfig(
            image_size=vision.get("image_size", 224),
            layers=tuple(layers),
            width=width,
            heads=width * 32 // head_width,
        )
    else:
        vision_cfg = ViTConfig(
            image_size=vision.get("image_size", 224),
            patch_size=vision.get("patch_size", 16),
            width=width,
            layers=layers,
            heads=width // head_width,
            mlp_ratio=vision.get("mlp_ratio", 4.0),
            **{key: vision[key] for key in VIT_OPTION_KEYS if key in vision},
        )
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"],
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        vision=vision_cfg,
        text=text_config_to_native(text),
    )


#: open_clip ``vision_cfg`` options that are :class:`ViTConfig` fields under the same names
VIT_OPTION_KEYS = ("ls_init_value", "no_ln_pre", "pool_type", "final_ln_after_pool")
#: open_clip ``text_cfg`` keys that are a text tower config's fields under the same names
TEXT_GEOMETRY_KEYS = ("context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio")


def text_geometry(text: dict[str, Any]) -> dict[str, Any]:
    """The transformer geometry an open_clip ``text_cfg`` sets (absent keys: the tower
    config's defaults, which are open_clip's)."""
    return {key: text[key] for key in TEXT_GEOMETRY_KEYS if key in text}


def _eot_token_id(text: dict[str, Any]) -> int | None:
    """open_clip's text pooling: ``argmax`` of the ids (``None``) or the first ``eos_id``
    (``pool_type: "eos"``, MetaCLIP 2 worldwide's XLM-V / mT5 vocabularies)."""
    pool = text.get("pool_type", "argmax")
    if pool in ("argmax", "last"):
        return None
    eos = text.get("eos_id")
    if pool != "eos" or isinstance(eos, bool) or not isinstance(eos, int):
        raise ConfigError(
            f"open_clip text_cfg pool_type {pool!r} (eos_id {eos!r}) is not supported by "
            "clipforge's CLIP text tower (only 'argmax' and 'eos' with an int eos_id)"
        )
    return eos


def text_config_to_native(text: dict[str, Any]) -> TextConfig:
    """open_clip ``text_cfg`` of CLIP's causal text transformer → :class:`TextConfig`."""
    return TextConfig(
        **text_geometry(text),
        eot_token_id=_eot_token_id(text),
        causal=not text.get("no_causal_mask", False),
        pool_type="last" if text.get("pool_type") == "last" else "eot",
    )


def text_config_from_native(t: TextConfig) -> dict[str, Any]:
    """:class:`TextConfig` → open_clip ``text_cfg`` (``pool_type: "eos"`` for first-EOT
    pooling, ``no_causal_mask`` when not causal)."""
    text: dict[str, Any] = {key: getattr(t, key) for key in TEXT_GEOMETRY_KEYS}
    if t.eot_token_id is not None:  # pooled at the first end-of-text id (MetaCLIP 2 worldwide)
        text.update(pool_type="eos", eos_id=t.eot_token_id)
    if not t.causal:
        text["no_causal_mask"] = True
    if t.pool_type == "last":
        text["pool_type"] = "last"
    return text


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` → open_clip ``model_cfg``."""
    v, t = cfg.vision, cfg.text
    if cfg.norm_eps != 1e-5:
        raise ConfigError("open_clip models use LayerNorm eps 1e-5")
    overrides = [
        f"{name}.{key}"
        for name, tower in (("vision", v), ("text", t))
        for key in ("activation", "norm_eps")
        if isinstance(tower, ViTConfig | TextConfig) and getattr(tower, key) is not None
    ]
    if overrides:
        raise ConfigError(
            f"open_clip's CLIP has one activation and LayerNorm eps for both towers; this "
            f"model sets {', '.join(overrides)} per tower (save as 'hf' or 'clipforge')"
        )
    if isinstance(v, ResNetConfig):
        vision = {
            "image_size": v.image_size,
            "layers": list(v.layers),
            "width": v.width,
            "head_width": v.width * 32 // v.heads,
            "patch_size": None,
        }
    else:
        vision = {
            "image_size": v.image_size,
            "layers": v.layers,
            "width": v.width,
            "head_width": v.width // v.heads,
            "mlp_ratio": v.mlp_ratio,
            "patch_size": v.patch_size,
            **{key: getattr(v, key) for key in VIT_OPTION_KEYS if key in tower_to_dict(v)},
        }
    return {
        "embed_dim": cfg.embed_dim,
        "quick_gelu": cfg.activation == "quick_gelu",
        "vision_cfg": vision,
        "text_cfg": text_config_from_native(t),
    }


def preprocess_to_native(pp: dict[str, Any], image_size: int) -> PreprocessConfig:
    """open_clip ``preprocess_cfg`` → :class:`PreprocessConfig`."""
    size = pp.get("size", image_size)
    size = size[0] if isinstance(size, list | tuple) else size
    fields = {k: pp[k] for k in ("interpolation", "resize_mode", "fill_color") if k in pp}
    fields.update({k: tuple(pp[k]) for k in ("mean", "std") if k in pp})
    return PreprocessConfig(image_size=size, **fields)


def preprocess_from_native(pp: PreprocessConfig) -> dict[str, Any]:
    """:class:`PreprocessConfig` → open_clip ``preprocess_cfg``."""
    return {
        "size": pp.image_size,
        "mean": list(pp.mean),
        "std": list(pp.std),
        "interpolation": pp.interpolation,
        "resize_mode": pp.resize_mode,
        "fill_color": pp.fill_color,
    }


#: tower families with their own open_clip layout (EVA, SigLIP: timm trunks)
FAMILIES = Families("open_clip")
register_family = FAMILIES.add


def model_config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """Any open_clip ``model_cfg`` → :class:`ClipConfig`: its family's translation (EVA,
    SigLIP), or the plain CLIP one."""
    family = FAMILIES.for_config(model_cfg)
    return (family.config_to_native if family else config_to_native)(model_cfg)


def read_dir(directory: Path, trust_pickle: bool) -> LoadedCheckpoint:
    """An open_clip hub directory (``open_clip_config.json`` + weights)."""

    config_file = directory / CONFIG_FILE
    meta = read_json(config_file)
    if "model_cfg" not in meta:
        raise CheckpointError(f"{config_file}: missing 'model_cfg'")
    family = FAMILIES.for_config(meta["model_cfg"])
    with config_errors(config_file):
        cfg = model_config_to_native(meta["model_cfg"])
        preprocess = preprocess_to_native(meta.get("preprocess_cfg", {}), cfg.vision.image_size)
    weights = find_weights(directory, WEIGHTS_FILES)
    raw = read_state_dict(weights, trust_pickle)
    if family is not None:
        tokenizer = family.read_tokenizer(directory) if family.read_tokenizer else None
        return LoadedCheckpoint(
            family.to_native(raw), cfg, preprocess, str(weights),
            config_source=str(config_file), tokenizer=tokenizer,
        )  # fmt: skip
    # Detected, not assumed: CLIP weights have OpenAI's keys, CustomTextCLIP weights ours.
    state = to_native_state(raw, str(weights))
    return LoadedCheckpoint(state, cfg, preprocess, str(weights), config_source=str(config_file))


def write_dir(
    config: ClipConfig, preprocess: PreprocessConfig, state: StateDict, directory: Path
) -> None:
    """Write ``open_clip_config.json`` and the weights in open_clip's layout for the family."""
    family = FAMILIES.for_model(config)
    meta = {
        "model_cfg": (family.config_from_native if family else config_from_native)(config),
        "preprocess_cfg": preprocess_from_native(preprocess),
    }
    tensors = (family.from_native if family else openai.from_native)(state)
    write_directory(directory, {CONFIG_FILE: meta}, WEIGHTS_FILES[0], tensors)


FORMAT = CheckpointFormat(
    name=NAME,
    matches=None,  # no key layout of its own (see the module docstring)
    to_native=openai.to_native,
    from_native=openai.from_native,
    config_files=(CONFIG_FILE,),
    weights_files=WEIGHTS_FILES,
    read_dir=read_dir,
    write_dir=write_dir,
    priority=20,  # hub repos often carry a transformers config.json too: ours wins
)
