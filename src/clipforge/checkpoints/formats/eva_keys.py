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

import functools
from dataclasses import dataclass

import torch

from ...configs.eva import EvaVisionConfig
from . import timm_names
from .base import CheckpointFormat, layout_of
from .open_clip import register_family
from .renames import KeyTable, fused
from .timm_trunks import CustomTextTrunks

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

StateDict = dict[str, torch.Tensor]
_TIMM = "visual.trunk."
_NATIVE = "visual."
_BLOCK = timm_names.BLOCK
#: timm's ViT names (:mod:`.timm_names`) and timm's head as clipforge's projection
_NAMES = timm_names.TRUNK + (("head.", "proj."),)
#: EVA-02 B/L project q, k and v separately (biases on q and v only)
_SPLIT_QKV_NAMES = (
    ("blocks.{i}.attn.q_proj.bias", _BLOCK + "attn.q_bias"),
    ("blocks.{i}.attn.v_proj.bias", _BLOCK + "attn.v_bias"),
)
_SPLIT_QKV = fused("blocks.{i}.attn.{p}_proj.weight", "qkv", _BLOCK + "attn.in_proj_weight", [""])
#: EVA-01 and EVA-02-E fuse them (``qkv.weight`` is in the shared table)
_FUSED_QKV_NAMES = (
    ("blocks.{i}.attn.q_bias", _BLOCK + "attn.q_bias"),
    ("blocks.{i}.attn.v_bias", _BLOCK + "attn.v_bias"),
)
#: SwiGLU's gate and value projections form one ``c_fc`` (gate rows first)
_SWIGLU = fused("blocks.{i}.mlp.fc1_{p}.{kind}", "gx", _BLOCK + "mlp.c_fc.{kind}")


@functools.cache
def _table(split_qkv: bool, swiglu: bool) -> KeyTable:
    """The layout of one kind of EVA trunk (``to_native`` reads every kind with the first)."""
    names = (_SPLIT_QKV_NAMES if split_qkv else ()) + _FUSED_QKV_NAMES + _NAMES
    merges = (_SPLIT_QKV if split_qkv else ()) + (_SWIGLU if swiglu else ())
    return KeyTable(_TIMM, _NATIVE, names, "EVA", merges=merges,
                    unbatched=timm_names.UNBATCHED, where="image-tower key")  # fmt: skip


def matches(state: StateDict) -> bool:
    """Whether ``state`` is an open_clip EVA state dict (timm ``Eva`` trunk, class token)."""
    return f"{_TIMM}cls_token" in state and (
        f"{_TIMM}blocks.0.attn.q_proj.weight" in state or f"{_TIMM}blocks.0.attn.q_bias" in state
    )


def to_native(state: StateDict) -> StateDict:
    """open_clip EVA state dict → clipforge's (same values; renamed, merged, reshaped)."""
    return _table(split_qkv=True, swiglu=True).to_native(state)


def from_native(state: StateDict, split_qkv: bool | None = None) -> StateDict:
    """clipforge EVA state dict → open_clip's (inverse of :func:`to_native`).

    ``split_qkv`` picks timm's separate ``q_proj``/``k_proj``/``v_proj`` over a fused
    ``qkv``; ``None`` infers it as timm's EVA-CLIP trunks define it: the EVA-02 B/L trunks,
    the ones with a sub-LN after attention, project separately. A SwiGLU block's ``c_fc``
    has twice the rows of ``c_proj``'s input width.
    """
    block = f"{_NATIVE}transformer.resblocks.0."
    if split_qkv is None:
        split_qkv = f"{block}attn.ln.weight" in state
    c_fc, c_proj = state.get(f"{block}mlp.c_fc.weight"), state.get(f"{block}mlp.c_proj.weight")
    swiglu = c_fc is not None and c_proj is not None and c_fc.shape[0] == 2 * c_proj.shape[1]
    return _table(split_qkv, swiglu).from_native(state)


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


_CONFIGS = CustomTextTrunks(
    {name: trunk.config() for name, trunk in TRUNKS.items()},
    family="EVA", kind="EVA-CLIP", pool="token",
)  # fmt: skip
config_to_native = _CONFIGS.config_to_native
config_from_native = _CONFIGS.config_from_native
register_family(_CONFIGS.layout_family("eva", layout_of(__name__)))

#: bare open_clip EVA state dicts are recognised by their ``visual.trunk.*`` keys, before
#: clipforge's own layout (they share its ``text.*`` keys, as open_clip's CustomTextCLIP does)
FORMAT = CheckpointFormat.of_state_layout("open_clip_eva", layout_of(__name__), priority=40)
