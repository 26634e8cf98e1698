"""Hugging Face transformers ``CLIPModel`` checkpoints: key and config translation.

HF splits the fused attention projection into ``q/k/v_proj`` and stores projections as
``nn.Linear`` weights (transposed w.r.t. OpenAI's matrices); everything else is renaming.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ...configs import ClipConfig, ConfigError, TextConfig, ViTConfig
from ...configs.model_config import ActivationName, TowerActivation
from ...preprocess import PreprocessConfig
from ..directory import config_errors, find_weights, read_json, write_directory
from ..errors import CheckpointError
from ..reader import read_state_dict
from . import hf_preprocess
from .base import CheckpointFormat, Families, LoadedCheckpoint, StateDict

NAME = "hf"
CONFIG_FILE = "config.json"
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
#: transformers ``hidden_act`` → clipforge activation (and back)
_ACTS: dict[str, TowerActivation] = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
}
_HF_ACTS = {native: hf for hf, native in _ACTS.items()}

# (hf name, native name) for per-layer and top-level parameters; {t} is the tower prefix.
_BLOCK_RENAMES = (
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
)
_TOP_RENAMES = (
    ("text_model.embeddings.token_embedding.weight", "text.token_embedding.weight"),
    ("text_model.embeddings.position_embedding.weight", "text.positional_embedding"),
    ("text_model.final_layer_norm.", "text.ln_final."),
    ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
    ("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"),
    ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
    ("vision_model.pre_layrnorm.", "visual.ln_pre."),
    ("vision_model.post_layernorm.", "visual.ln_post."),
    ("logit_scale", "logit_scale"),
)
_TRANSPOSED = (
    ("text_projection.weight", "text.text_projection"),
    ("visual_projection.weight", "visual.proj"),
)
_TOWERS = (
    ("text_model.encoder.layers.", "text.transformer.resblocks."),
    ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
)
_LAYER = re.compile(r"^(\d+)\.(.+)$")


def matches(state: dict[str, torch.Tensor]) -> bool:
    """True for transformers keys (``text_model.*`` / ``vision_model.*``)."""
    return any(k.startswith(("text_model.", "vision_model.")) for k in state)


def to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF keys → clipforge keys (q/k/v fused, projections transposed)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        new = _rename_top(key, value, out)
        if new:
            continue
        for hf_prefix, prefix in _TOWERS:
            if key.startswith(hf_prefix):
                layer, rest = _layer_and_rest(key[len(hf_prefix) :], key)
                m = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
                if m:
                    qkv.setdefault(f"{prefix}{layer}.attn.in_proj_{m[2]}", {})[m[1]] = value
                else:
                    out[f"{prefix}{layer}.{_rename_block(rest)}"] = value
                break
        else:
            out[key] = value  # unknown: reported as unexpected by the loader
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ConfigError(f"incomplete q/k/v projections for {key}")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _rename_top(key: str, value: torch.Tensor, out: dict[str, torch.Tensor]) -> bool:
    for hf, native in _TRANSPOSED:
        if key == hf:
            out[native] = value.t().contiguous()
            return True
    for hf, native in _TOP_RENAMES:
        if key == hf or (hf.endswith(".") and key.startswith(hf)):
            out[native + key[len(hf) :]] = value
            return True
    return False


def _rename_block(rest: str, reverse: bool = False) -> str:
    for hf, native in _BLOCK_RENAMES:
        src, dst = (native, hf) if reverse else (hf, native)
        if rest.startswith(src + "."):
            return dst + rest[len(src) :]
    return rest


def from_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """clipforge keys → HF keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(key == native for _, native in _TRANSPOSED):
            hf = next(h for h, n in _TRANSPOSED if n == key)
            out[hf] = value.t().contiguous()
            continue
        top = next(
            (
                (h, n)
                for h, n in _TOP_RENAMES
                if key == n or (n.endswith(".") and key.startswith(n))
            ),
            None,
        )
        if top:
            out[top[0] + key[len(top[1]) :]] = value
            continue
        hf_prefix, prefix = next((h, p) for h, p in _TOWERS if key.startswith(p))
        layer, rest = _layer_and_rest(key[len(prefix) :], key)
        if rest.startswith("attn.in_proj_"):
            kind = rest.removeprefix("attn.in_proj_")
            for name, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{hf_prefix}{layer}.self_attn.{name}_proj.{kind}"] = chunk.contiguous()
        else:
            out[f"{hf_prefix}{layer}.{_rename_block(rest, reverse=True)}"] = value
    return out


def _section(hf: dict[str, Any], name: str) -> dict[str, Any]:
    value = hf.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}")
    return value


def _get(section: dict[str, Any], where: str, key: str, default: Any, kind: type) -> Any:
    """``section[key]`` (or ``default``) checked to be a ``kind``, naming ``where.key``."""
    value = section.get(key, default)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        expected = {int: "an integer", float: "a number", str: "a string"}[kind]
        raise ConfigError(f"{where}{key} must be {expected}, got {value!r:.80}")
    return value


def config_to_native(hf: dict[str, Any]) -> ClipConfig:
    """A transformers ``CLIPConfig`` dict → :class:`ClipConfig` (every field type-checked)."""
    vision, text = _section(hf, "vision_config"), _section(hf, "text_config")

    def v(key: str, default: Any, kind: type = int) -> Any:
        return _get(vision, "vision_config.", key, default, kind)

    def t(key: str, default: Any, kind: type = int) -> Any:
        return _get(text, "text_config.", key, default, kind)

    v_act = _activation(v("hidden_act", "quick_gelu", str), "vision_config")
    t_act = _activation(t("hidden_act", "quick_gelu", str), "text_config")
    v_eps, t_eps = v("layer_norm_eps", 1e-5, float), t("layer_norm_eps", 1e-5, float)
    # The vision tower's settings are the model-wide ones; a tower that differs overrides.
    model_act: ActivationName = "quick_gelu" if v_act == "quick_gelu" else "gelu"
    return ClipConfig(
        embed_dim=_get(hf, "", "projection_dim", 512, int),
        activation=model_act,
        norm_eps=v_eps,
        init_logit_scale=_get(hf, "", "logit_scale_init_value", 2.6592, float),
        vision=ViTConfig(
            image_size=v("image_size", 224),
            patch_size=v("patch_size", 32),
            **_geometry(v, "vision_config", width=768, heads=12, intermediate=3072),
            activation=None if v_act == model_act else v_act,
        ),
        text=TextConfig(
            context_length=t("max_position_embeddings", 77),
            vocab_size=t("vocab_size", 49408),
            **_geometry(t, "text_config", width=512, heads=8, intermediate=2048),
            eot_token_id=_hf_eot_rule(text),
            activation=None if t_act == model_act else t_act,
            norm_eps=None if t_eps == v_eps else t_eps,
        ),
    )


def _geometry(
    get: Callable[[str, Any], Any], section: str, *, width: int, heads: int, intermediate: int
) -> dict[str, Any]:
    """A transformers tower's ``width``, ``layers``, ``heads`` and ``mlp_ratio`` (defaults:
    its ``hidden_size`` ``width``, ``heads`` heads, 12 layers, ``intermediate`` MLP width)."""
    hidden = get("hidden_size", width)
    if hidden <= 0:
        raise ConfigError(f"{section}.hidden_size must be positive, got {hidden}")
    return {
        "width": hidden, "layers": get("num_hidden_layers", 12),
        "heads": get("num_attention_heads", heads),
        "mlp_ratio": get("intermediate_size", intermediate) / hidden,
    }  # fmt: skip


def _layer_and_rest(name: str, key: str) -> tuple[str, str]:
    """``"<layer>.<rest>"`` of a per-layer key (``key`` names it in the error)."""
    match = _LAYER.match(name)
    if match is None:
        raise CheckpointError(f"tensor {key!r} does not name a layer")
    return match.group(1), match.group(2)


def _activation(hf_name: str, section: str) -> TowerActivation:
    """A transformers ``hidden_act`` → clipforge's name (one-line error naming the field)."""
    if hf_name not in _ACTS:
        raise ConfigError(
            f"{section}.hidden_act {hf_name!r} is not supported (allowed: {', '.join(_ACTS)})"
        )
    return _ACTS[hf_name]


def _tower_settings(cfg: ClipConfig, tower: Any) -> dict[str, Any]:
    """A tower's ``hidden_act`` and ``layer_norm_eps``: its overrides, else the model's."""
    eps = cfg.norm_eps if tower.norm_eps is None else tower.norm_eps
    return {"hidden_act": _HF_ACTS[tower.activation or cfg.activation], "layer_norm_eps": eps}


def _hf_eot_rule(text: dict[str, Any]) -> int | None:
    """transformers pools at argmax when ``eos_token_id == 2`` (legacy configs), else at the
    first ``eos_token_id``; that equals argmax when EOT is the largest id."""
    eos = _get(text, "text_config.", "eos_token_id", 49407, int)
    vocab = _get(text, "text_config.", "vocab_size", 49408, int)
    return None if eos in (2, vocab - 1) else eos


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` → a transformers ``CLIPConfig`` dict (ViT image towers only)."""
    if not isinstance(cfg.vision, ViTConfig):
        raise ConfigError(
            "transformers' CLIPModel has no ResNet image tower; save as "
            "'open_clip' or 'clipforge' instead"
        )
    v, t = cfg.vision, cfg.text
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": cfg.embed_dim,
        "logit_scale_init_value": cfg.init_logit_scale,
        "vision_config": {
            **_tower_settings(cfg, v),
            "hidden_size": v.width,
            "intermediate_size": v.mlp_width,
            "num_hidden_layers": v.layers,
            "num_attention_heads": v.heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "projection_dim": cfg.embed_dim,
            "model_type": "clip_vision_model",
        },
        "text_config": {
            **_tower_settings(cfg, t),
            "hidden_size": t.width,
            "intermediate_size": t.mlp_width,
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length,
            "vocab_size": t.vocab_size,
            "projection_dim": cfg.embed_dim,
            # EOT is the largest id unless the config names it.
            "bos_token_id": t.vocab_size - 2,
            "eos_token_id": t.vocab_size - 1 if t.eot_token_id is None else t.eot_token_id,
            "pad_token_id": 1,
            "model_type": "clip_text_model",
        },
    }


#: model families with their own transformers classes (``SiglipModel``)
FAMILIES = Families("hf")
register_family = FAMILIES.add


def read_dir(directory: Path, trust_pickle: bool) -> LoadedCheckpoint:
    """A transformers ``save_pretrained`` directory of a ``CLIPModel`` (or a family's model)."""
    config_file = directory / CONFIG_FILE
    config_json = read_json(config_file)
    family = FAMILIES.for_config(config_json)
    with config_errors(config_file):
        cfg = (family.config_to_native if family else config_to_native)(config_json)
    pp_file = directory / hf_preprocess.FILE
    if pp_file.is_file():
        with config_errors(pp_file):
            preprocess = hf_preprocess.preprocess_to_native(read_json(pp_file))
    else:
        preprocess = PreprocessConfig(image_size=cfg.vision.image_size, pipeline="hf")
    weights = find_weights(directory, WEIGHTS_FILES)
    state = (family.to_native if family else to_native)(read_state_dict(weights, trust_pickle))
    tokenizer = family.read_tokenizer(directory) if family and family.read_tokenizer else None
    return LoadedCheckpoint(
        state, cfg, preprocess, str(weights), config_source=str(config_file), tokenizer=tokenizer
    )


def write_dir(
    config: ClipConfig, preprocess: PreprocessConfig, state: StateDict, directory: Path
) -> None:
    """Write ``config.json``, ``preprocessor_config.json`` and ``model.safetensors``."""
    family = FAMILIES.for_model(config)
    files = {
        CONFIG_FILE: (family.config_from_native if family else config_from_native)(config),
        hf_preprocess.FILE: hf_preprocess.preprocess_from_native(preprocess),
    }
    tensors = (family.from_native if family else from_native)(state)
    write_directory(directory, files, WEIGHTS_FILES[0], tensors)


FORMAT = CheckpointFormat(
    name=NAME,
    matches=matches,
    to_native=to_native,
    from_native=from_native,
    config_files=(CONFIG_FILE, hf_preprocess.FILE),
    weights_files=WEIGHTS_FILES,
    read_dir=read_dir,
    write_dir=write_dir,
    priority=10,
)
