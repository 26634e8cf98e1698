"""SigLIP key mapping: open_clip's layout (timm trunk under ``visual.trunk.``) ↔ clipforge's.

Pure functions on state dicts; no I/O. The text tower, ``logit_scale`` and ``logit_bias``
have the same names in both layouts; the image tower is renamed block by block, and two
tensors change shape: timm's ``pos_embed`` ``(1, L, C)`` ↔ ``positional_embedding``
``(L, C)`` and the pooling query ``latent`` ``(1, 1, C)`` ↔ ``(1, C)``.
"""

from __future__ import annotations

import re

import torch

__all__ = ["from_native", "matches", "to_native"]

_TIMM = "visual.trunk."
#: (timm name under ``visual.trunk.``, clipforge name under ``visual.``): a name ending in
#: "." renames a module prefix, any other a whole parameter; ``{i}`` is a block index
_VISION_NAMES: tuple[tuple[str, str], ...] = (
    ("patch_embed.proj.", "patch_embed."),
    ("pos_embed", "positional_embedding"),
    ("blocks.{i}.norm1.", "transformer.resblocks.{i}.ln_1."),
    ("blocks.{i}.norm2.", "transformer.resblocks.{i}.ln_2."),
    ("blocks.{i}.attn.qkv.weight", "transformer.resblocks.{i}.attn.in_proj_weight"),
    ("blocks.{i}.attn.qkv.bias", "transformer.resblocks.{i}.attn.in_proj_bias"),
    ("blocks.{i}.attn.proj.", "transformer.resblocks.{i}.attn.out_proj."),
    ("blocks.{i}.mlp.fc1.", "transformer.resblocks.{i}.mlp.c_fc."),
    ("blocks.{i}.mlp.fc2.", "transformer.resblocks.{i}.mlp.c_proj."),
    ("norm.", "ln_post."),
    ("attn_pool.latent", "attn_pool.latent"),
    ("attn_pool.q.", "attn_pool.q_proj."),
    ("attn_pool.kv.", "attn_pool.kv_proj."),
    ("attn_pool.proj.", "attn_pool.out_proj."),
    ("attn_pool.norm.", "attn_pool.ln."),
    ("attn_pool.mlp.fc1.", "attn_pool.mlp.c_fc."),
    ("attn_pool.mlp.fc2.", "attn_pool.mlp.c_proj."),
)
_HEAD_TIMM, _HEAD_NATIVE = "visual.head.proj.", "visual.proj."
_UNBATCHED = ("positional_embedding", "attn_pool.latent")  # native names without timm's 1-dims


def _rules(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Name templates → (compiled pattern, replacement) for :func:`re.Pattern.sub`."""
    rules = []
    for source, target in pairs:
        pattern = re.escape(source).replace(re.escape("{i}"), r"(\d+)")
        end = "" if source.endswith(".") else "$"
        rules.append((re.compile(f"^{pattern}{end}"), target.replace("{i}", r"\1")))
    return tuple(rules)


_TO_NATIVE = _rules(_VISION_NAMES)
_FROM_NATIVE = _rules(tuple((native, timm) for timm, native in _VISION_NAMES))


def _rename(name: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    for pattern, replacement in rules:
        new, count = pattern.subn(replacement, name, count=1)
        if count:
            return new
    raise KeyError(f"no SigLIP mapping for image-tower key {name!r}")


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` is an open_clip SigLIP state dict (timm trunk with a MAP head)."""
    return f"{_TIMM}attn_pool.latent" in state and f"{_TIMM}pos_embed" in state


def to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip SigLIP state dict → clipforge's (same tensors, renamed and reshaped)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_TIMM):
            name = _rename(key.removeprefix(_TIMM), _TO_NATIVE)
            if name in _UNBATCHED:
                value = value.reshape(value.shape[-2:] if value.ndim == 3 else value.shape)
            out[f"visual.{name}"] = value
        elif key.startswith(_HEAD_TIMM):
            out[_HEAD_NATIVE + key.removeprefix(_HEAD_TIMM)] = value
        else:
            out[key] = value
    return out


def from_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """clipforge SigLIP state dict → open_clip's (inverse of :func:`to_native`)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_HEAD_NATIVE):
            out[_HEAD_TIMM + key.removeprefix(_HEAD_NATIVE)] = value
        elif key.startswith("visual."):
            name = key.removeprefix("visual.")
            if name in _UNBATCHED:
                value = value.unsqueeze(0)
            out[_TIMM + _rename(name, _FROM_NATIVE)] = value
        else:
            out[key] = value
    return out
