"""EVA-CLIP key mapping: open_clip's layout (timm ``Eva`` trunk under ``visual.trunk.``) ↔
clipforge's, and open_clip's EVA ``model_cfg`` ↔ :class:`ClipConfig`.

Pure functions on state dicts and config dicts; no I/O. The text tower (``text.*``, CLIP's
transformer as open_clip's ``CustomTextCLIP`` names it) and ``logit_scale`` have the same
names in both layouts. The image tower is renamed block by block, with three merges:
timm's separate ``q_proj``/``k_proj``/``v_proj`` (EVA-02) or fused ``qkv`` (EVA-01, EVA-02-E)
become ``attn.in_proj_weight`` (biases stay ``q_bias``/``v_bias``: keys have none), SwiGLU's
``fc1_g``/``fc1_x`` become one ``mlp.c_fc`` (gate rows first), and the ``(1, ...)`` batch
dims of ``cls_token``/``pos_embed`` are dropped.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, cast

import torch

from ...configs import ClipConfig, ConfigError, TextConfig
from ...configs.eva import EvaVisionConfig
from .base import CheckpointFormat, KeyTranslation, LayoutFamily
from .open_clip import (
    _UNSUPPORTED_TEXT,
    _reject_unsupported,
    register_family,
    text_config_to_native,
)
from .renames import Renames, compile_template

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

StateDict = dict[str, torch.Tensor]
_TIMM = "visual.trunk."
_NATIVE = "visual."
_BLOCK = "transformer.resblocks.{i}."
#: one-to-one renames (timm name under ``visual.trunk.``, clipforge name under ``visual.``);
#: a name ending in "." renames a module prefix; ``{i}`` is a block index
_RENAMES: tuple[tuple[str, str], ...] = (
    ("patch_embed.proj.", "patch_embed."),
    ("cls_token", "class_embedding"),
    ("pos_embed", "positional_embedding"),
    ("blocks.{i}.norm1.", _BLOCK + "ln_1."),
    ("blocks.{i}.norm2.", _BLOCK + "ln_2."),
    ("blocks.{i}.attn.q_proj.bias", _BLOCK + "attn.q_bias"),
    ("blocks.{i}.attn.v_proj.bias", _BLOCK + "attn.v_bias"),
    ("blocks.{i}.attn.q_bias", _BLOCK + "attn.q_bias"),
    ("blocks.{i}.attn.v_bias", _BLOCK + "attn.v_bias"),
    ("blocks.{i}.attn.qkv.weight", _BLOCK + "attn.in_proj_weight"),
    ("blocks.{i}.attn.norm.", _BLOCK + "attn.ln."),
    ("blocks.{i}.attn.proj.", _BLOCK + "attn.out_proj."),
    ("blocks.{i}.mlp.fc1.", _BLOCK + "mlp.c_fc."),
    ("blocks.{i}.mlp.norm.", _BLOCK + "mlp.ln."),
    ("blocks.{i}.mlp.fc2.", _BLOCK + "mlp.c_proj."),
    ("norm.", "ln_post."),
    ("head.", "proj."),
)
_UNBATCHED = ("class_embedding", "positional_embedding")  # native names without timm's 1-dims
#: timm tensors merged into one native tensor: (timm parts, native name), concatenated on dim 0
_MERGES: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("blocks.{i}.attn.q_proj.weight", "blocks.{i}.attn.k_proj.weight",
         "blocks.{i}.attn.v_proj.weight"),
        _BLOCK + "attn.in_proj_weight",
    ),
    (("blocks.{i}.mlp.fc1_g.weight", "blocks.{i}.mlp.fc1_x.weight"), _BLOCK + "mlp.c_fc.weight"),
    (("blocks.{i}.mlp.fc1_g.bias", "blocks.{i}.mlp.fc1_x.bias"), _BLOCK + "mlp.c_fc.bias"),
)  # fmt: skip


_TO_NATIVE = Renames(_RENAMES, "EVA", "image-tower key")
_FROM_NATIVE = Renames(
    tuple((b, a) for a, b in _RENAMES if "q_proj" not in a and "v_proj" not in a),
    "EVA",
    "image-tower key",
)


def matches(state: StateDict) -> bool:
    """Whether ``state`` is an open_clip EVA state dict (timm ``Eva`` trunk, class token)."""
    return f"{_TIMM}cls_token" in state and (
        f"{_TIMM}blocks.0.attn.q_proj.weight" in state or f"{_TIMM}blocks.0.attn.q_bias" in state
    )


def _merge_target(name: str) -> tuple[str, int, int] | None:
    """``(native name, part index, part count)`` when timm ``name`` is one part of a merge."""
    for parts, target in _MERGES:
        for index, part in enumerate(parts):
            found = compile_template(part).match(name)
            if found:
                return target.replace("{i}", found[1]), index, len(parts)
    return None


def to_native(state: StateDict) -> StateDict:
    """open_clip EVA state dict → clipforge's (same values; renamed, merged, reshaped)."""
    out: StateDict = {}
    pending: dict[str, list[torch.Tensor | None]] = {}
    for key, value in state.items():
        if not key.startswith(_TIMM):
            out[key] = value
            continue
        name = key.removeprefix(_TIMM)
        merge = _merge_target(name)
        if merge is not None:
            target, index, count = merge
            pending.setdefault(target, [None] * count)[index] = value
            continue
        name = _TO_NATIVE(name)
        if name in _UNBATCHED:  # (1, 1, C) -> (C), (1, L, C) -> (L, C)
            value = value.reshape(-1) if value.shape[1] == 1 else value[0]
        out[_NATIVE + name] = value
    for target, parts in pending.items():
        if any(p is None for p in parts):
            raise KeyError(f"EVA state dict has only some of the tensors that form {target!r}")
        out[_NATIVE + target] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
    return out


def _block_from_native(
    prefix: str, leaf: str, value: torch.Tensor, state: StateDict, split_qkv: bool
) -> dict[str, str | torch.Tensor] | None:
    """timm tensors for the native block tensor ``prefix + leaf`` needing a split, else None."""
    timm = prefix.replace(_NATIVE + "transformer.resblocks.", "blocks.")
    if leaf == "attn.in_proj_weight" and split_qkv:
        q, k, v = value.chunk(3, dim=0)
        return {f"{timm}attn.q_proj.weight": q, f"{timm}attn.k_proj.weight": k,
                f"{timm}attn.v_proj.weight": v}  # fmt: skip
    if leaf in ("attn.q_bias", "attn.v_bias") and split_qkv:
        return {f"{timm}attn.{leaf[5]}_proj.bias": value}
    if leaf.startswith("mlp.c_fc.") and _is_swiglu(prefix, state):
        gate, x = value.chunk(2, dim=0)
        kind = leaf.removeprefix("mlp.c_fc.")
        return {f"{timm}mlp.fc1_g.{kind}": gate, f"{timm}mlp.fc1_x.{kind}": x}
    return None


def _is_swiglu(prefix: str, state: StateDict) -> bool:
    """A SwiGLU block's ``c_fc`` has twice the rows of ``c_proj``'s input width."""
    return (
        state[f"{prefix}mlp.c_fc.weight"].shape[0]
        == 2 * state[f"{prefix}mlp.c_proj.weight"].shape[1]
    )


_BLOCK_KEY = re.compile(r"^(visual\.transformer\.resblocks\.\d+\.)(.+)$")


def from_native(state: StateDict, split_qkv: bool | None = None) -> StateDict:
    """clipforge EVA state dict → open_clip's (inverse of :func:`to_native`).

    ``split_qkv`` picks timm's separate ``q_proj``/``k_proj``/``v_proj`` over a fused
    ``qkv``; ``None`` infers it as timm's EVA-CLIP trunks define it: the EVA-02 B/L trunks,
    the ones with a sub-LN after attention, project separately.
    """
    if split_qkv is None:
        split_qkv = f"{_NATIVE}transformer.resblocks.0.attn.ln.weight" in state
    out: StateDict = {}
    for key, value in state.items():
        if not key.startswith(_NATIVE):
            out[key] = value
            continue
        block = _BLOCK_KEY.match(key)
        parts = block and _block_from_native(block[1], block[2], value, state, split_qkv)
        if parts:
            out.update({_TIMM + k: v for k, v in parts.items()})  # type: ignore[misc]
            continue
        name = key.removeprefix(_NATIVE)
        out[_TIMM + _FROM_NATIVE(name)] = (
            value.reshape(1, *([1] if value.ndim == 1 else []), *value.shape)
            if name in _UNBATCHED
            else value
        )
    return out


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class _Trunk:
    """A timm EVA-CLIP trunk: what open_clip builds for ``timm_model_name``."""

    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    mlp_ratio: float
    eva02: bool = False  # rotary positions, SwiGLU, MLP and attention sub-LNs
    post_norm: bool = False

    def config(self) -> EvaVisionConfig:
        e = self.eva02
        return EvaVisionConfig(
            image_size=self.image_size, patch_size=self.patch_size, width=self.width,
            layers=self.layers, heads=self.heads, mlp_ratio=self.mlp_ratio, swiglu=e,
            mlp_norm=e, attn_norm=e, rope=e, post_norm=self.post_norm,
        )  # fmt: skip


_EVA02_MLP = 4 * 2 / 3
TRUNKS: dict[str, _Trunk] = {
    "eva02_base_patch16_clip_224": _Trunk(224, 16, 768, 12, 12, _EVA02_MLP, eva02=True),
    "eva02_large_patch14_clip_224": _Trunk(224, 14, 1024, 24, 16, _EVA02_MLP, eva02=True),
    "eva02_large_patch14_clip_336": _Trunk(336, 14, 1024, 24, 16, _EVA02_MLP, eva02=True),
    "eva_giant_patch14_224": _Trunk(224, 14, 1408, 40, 16, 6144 / 1408),
    "eva_giant_patch14_clip_224": _Trunk(224, 14, 1408, 40, 16, 6144 / 1408),
    "eva02_enormous_patch14_clip_224": _Trunk(224, 14, 1792, 64, 16, 15360 / 1792, post_norm=True),
}


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip EVA ``model_cfg`` (its JSON configs, hub directories) → :class:`ClipConfig`."""
    vision, text = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    name = vision.get("timm_model_name")
    if name not in TRUNKS:
        raise ConfigError(f"not a timm EVA-CLIP trunk: {name!r} (known: {sorted(TRUNKS)})")
    if vision.get("timm_pool") != "token" or vision.get("timm_proj") not in (None, ""):
        raise ConfigError("EVA-CLIP trunks pool the class token with timm's head (timm_proj null)")
    _reject_unsupported("text_cfg", text, _UNSUPPORTED_TEXT)
    if model_cfg.get("quick_gelu") or text.get("norm_kwargs") or text.get("act_kwargs"):
        raise ConfigError("EVA-CLIP text towers use GELU and LayerNorm eps 1e-5")
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"],
        vision=TRUNKS[name].config(),
        text=text_config_to_native(text),
    )


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` of an EVA-CLIP model → open_clip ``model_cfg`` (trunk by name)."""
    v, t = cfg.vision, cfg.text
    if not isinstance(v, EvaVisionConfig) or not isinstance(t, TextConfig):
        raise ConfigError("not an EVA-CLIP architecture")
    name = next((n for n, trunk in TRUNKS.items() if trunk.config() == v), None)
    if name is None:
        raise ConfigError(f"no timm EVA-CLIP trunk has this image tower ({v})")
    text_act, text_eps = t.activation or cfg.activation, t.norm_eps or cfg.norm_eps
    if text_eps != 1e-5 or text_act != "gelu" or t.eot_token_id is not None:
        raise ConfigError("open_clip EVA text towers use GELU, LayerNorm eps 1e-5, argmax pooling")
    text: dict[str, Any] = {
        "context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
        "heads": t.heads, "layers": t.layers,
    }  # fmt: skip
    if t.mlp_ratio != 4.0:
        text["mlp_ratio"] = t.mlp_ratio
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {
            "image_size": v.image_size, "timm_model_name": name, "timm_model_pretrained": False,
            "timm_pool": "token", "timm_proj": None,
        },
        "text_cfg": text,
        "custom_text": True,
    }  # fmt: skip


def _owns_config(model_cfg: dict[str, Any]) -> bool:
    return dict(model_cfg.get("vision_cfg") or {}).get("timm_model_name") in TRUNKS


#: this module defines the KeyTranslation functions (typed as such for the checker)
_LAYOUT = cast(KeyTranslation, sys.modules[__name__])

register_family(
    LayoutFamily.of(
        "eva",
        _LAYOUT,
        owns_config=_owns_config,
        owns_model=lambda cfg: isinstance(cfg.vision, EvaVisionConfig),
    )
)

#: bare open_clip EVA state dicts are recognised by their ``visual.trunk.*`` keys, before
#: clipforge's own layout (they share its ``text.*`` keys, as open_clip's CustomTextCLIP does)
FORMAT = CheckpointFormat.of_state_layout("open_clip_eva", _LAYOUT, priority=40)
