"""open_clip's HF text towers (``HFTextEncoder``: XLM-R / RoBERTa, mT5, NLLB-200): key
mapping of ``text.transformer.*`` (transformers' module names) ↔ clipforge's text tower,
and open_clip's ``model_cfg`` (``text_cfg.hf_model_name``) ↔ :class:`ClipConfig`.

Pure functions on state dicts and config dicts; no I/O, no transformers. Per layer,
transformers' separate query/key/value projections become one ``attn.in_proj_weight`` (and
bias), mT5's gated ``wi_0`` / ``wi_1`` one ``mlp.c_fc.weight`` (gate rows first); the
projection head (``text.proj.*``) keeps its name. The image tower is open_clip's ViT (already
clipforge's layout) or, for the NLLB-SigLIP models, a timm SigLIP trunk (translated by
:mod:`.siglip_keys`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, TypeAlias

import torch

from ...configs import ClipConfig, ConfigError, SigLipVisionConfig, TextConfig
from ...configs.hf_text import (
    HF_MODELS,
    M2M100TextConfig,
    RobertaTextConfig,
    T5TextConfig,
)
from ...configs.model_config import TEXT_CONFIGS
from ...tokenizer.files import tokenizer_from_dir
from ...tokenizer.hf import SPM_FILES
from ...tokenizer.sentencepiece import TOKENIZER_FILE
from . import open_clip, siglip_keys
from .base import CheckpointFormat, LayoutFamily, layout_of
from .renames import KeyTable, fused, prefixed

__all__ = ["config_from_native", "config_to_native", "from_native", "matches", "to_native"]

StateDict = dict[str, torch.Tensor]
_HF, _NATIVE, _BLOCK = "text.transformer.", "text.", "transformer.resblocks.{i}."
HFTextConfig: TypeAlias = RobertaTextConfig | T5TextConfig | M2M100TextConfig
_HF_TEXT_CLASSES = (RobertaTextConfig, T5TextConfig, M2M100TextConfig)

#: per family: one-to-one renames (transformers name, clipforge name; "." ends a prefix) and
#: merges (transformers parts, clipforge name; concatenated on dim 0, in this order)
_ROBERTA = (
    (
        ("embeddings.word_embeddings.weight", "token_embedding.weight"),
        ("embeddings.position_embeddings.weight", "positional_embedding"),
        ("embeddings.token_type_embeddings.weight", "token_type_embedding"),
        ("embeddings.LayerNorm.", "ln_pre."),
        *prefixed("encoder.layer.{i}.", _BLOCK, (
            ("attention.output.dense.", "attn.out_proj."),
            ("attention.output.LayerNorm.", "ln_1."),
            ("intermediate.dense.", "mlp.c_fc."),
            ("output.dense.", "mlp.c_proj."),
            ("output.LayerNorm.", "ln_2."),
        )),
        ("pooler.dense.", "pooler."),
    ),
    fused("encoder.layer.{i}.attention.self.{p}.{kind}", ("query", "key", "value"),
          _BLOCK + "attn.in_proj_{kind}"),
)  # fmt: skip
_T5 = (
    (
        ("embed_tokens.weight", "token_embedding.weight"),
        ("block.0.layer.0.SelfAttention.relative_attention_bias.weight",
         "relative_attention_bias.weight"),
        *prefixed("block.{i}.layer.", _BLOCK, (
            ("0.SelfAttention.o.weight", "attn.out_proj.weight"),
            ("0.layer_norm.weight", "ln_1.weight"),
            ("1.DenseReluDense.wo.weight", "mlp.c_proj.weight"),
            ("1.layer_norm.weight", "ln_2.weight"),
        )),
        ("final_layer_norm.weight", "ln_final.weight"),
    ),
    fused("block.{i}.layer.0.SelfAttention.{p}.weight", "qkv", _BLOCK + "attn.in_proj_weight",
          [""])
    + fused("block.{i}.layer.1.DenseReluDense.wi_{p}.weight", "01", _BLOCK + "mlp.c_fc.weight",
            [""]),
)  # fmt: skip
_M2M100 = (
    (
        ("embed_tokens.weight", "token_embedding.weight"),
        *prefixed("layers.{i}.", _BLOCK, (
            ("self_attn.out_proj.", "attn.out_proj."),
            ("self_attn_layer_norm.", "ln_1."),
            ("fc1.", "mlp.c_fc."),
            ("fc2.", "mlp.c_proj."),
            ("final_layer_norm.", "ln_2."),
        )),
        ("layer_norm.", "ln_final."),
    ),
    fused("layers.{i}.self_attn.{p}_proj.{kind}", "qkv", _BLOCK + "attn.in_proj_{kind}"),
)  # fmt: skip


def _table(layout: tuple[Any, Any]) -> KeyTable:
    renames, merges = layout
    return KeyTable(_HF, _NATIVE, renames, "HF text", merges=merges, outside=("proj",),
                    where="text-tower key")  # fmt: skip


#: text type -> (its layout, the transformers key that identifies the family)
_FAMILIES = {
    RobertaTextConfig.type: (_table(_ROBERTA), "embeddings.word_embeddings.weight"),
    T5TextConfig.type: (_table(_T5), "block.0.layer.0.SelfAttention.q.weight"),
    M2M100TextConfig.type: (_table(_M2M100), "layers.0.self_attn.q_proj.weight"),
}


def _family_of(state: StateDict) -> str | None:
    """The text type of an open_clip HF-text state dict (``None``: not one)."""
    return next((t for t, f in _FAMILIES.items() if _HF + f[1] in state), None)


def _native_family(state: StateDict) -> str:
    """The text type of a clipforge state dict of an HF text tower."""
    if "text.token_type_embedding" in state:
        return RobertaTextConfig.type
    if "text.relative_attention_bias.weight" in state:
        return T5TextConfig.type
    return M2M100TextConfig.type


def matches(state: StateDict) -> bool:
    """Whether ``state`` is an open_clip state dict with an HF text tower."""
    return _family_of(state) is not None


def to_native(state: StateDict) -> StateDict:
    """open_clip state dict with an HF text tower → clipforge's (renamed, merged; a SigLIP
    image trunk translated too)."""
    family = _family_of(state)
    if family is None:
        raise KeyError("not an open_clip HF text state dict (no text.transformer.* keys)")
    out = _FAMILIES[family][0].to_native(state)
    return siglip_keys.to_native(out) if siglip_keys.matches(out) else out


def from_native(state: StateDict) -> StateDict:
    """clipforge state dict of an HF-text model → open_clip's (inverse of :func:`to_native`)."""
    out = _FAMILIES[_native_family(state)][0].from_native(state)
    return siglip_keys.from_native(out) if "visual.attn_pool.latent" in out else out


# ----------------------------------------------------------------------------- configs
#: open_clip's pooler names <-> clipforge's
_POOLERS = {"mean_pooler": "mean", "cls_pooler": "cls",
            "cls_last_hidden_state_pooler": "cls_last_hidden_state"}  # fmt: skip
_OPEN_CLIP_POOLERS = {v: k for k, v in _POOLERS.items()}
#: text_cfg keys open_clip's HF towers read (others would change the model)
_TEXT_KEYS = {"hf_model_name", "hf_tokenizer_name", "hf_model_pretrained", "hf_proj_type",
              "hf_pooler_type", "context_length", "tokenizer_kwargs", "output_tokens"}  # fmt: skip


def text_to_native(text: dict[str, Any]) -> HFTextConfig:
    """open_clip's ``text_cfg`` of an ``HFTextEncoder`` → the clipforge text config of its
    hub model (known models only: their configs cannot be fetched here)."""
    name = str(text.get("hf_model_name"))
    if name not in HF_MODELS:
        raise ConfigError(f"unknown HF text model {name!r} (known: {', '.join(sorted(HF_MODELS))})")
    extra = sorted(set(text) - _TEXT_KEYS)
    if extra:
        raise ConfigError(f"open_clip text_cfg options {extra} are not supported with {name}")
    pooler = text.get("hf_pooler_type", "mean_pooler")
    if pooler not in _POOLERS:
        raise ConfigError(f"hf_pooler_type {pooler!r} is not supported (known: {sorted(_POOLERS)})")
    proj = text.get("hf_proj_type", "mlp")
    if proj not in ("mlp", "linear", None):
        raise ConfigError(f"hf_proj_type {proj!r} is not one of 'mlp', 'linear' or null")
    kind, fields = HF_MODELS[name]
    return TEXT_CONFIGS.get(kind)(
        **fields, context_length=text.get("context_length", 77), pooler=_POOLERS[pooler],
        proj=proj or "none",
    )  # fmt: skip


def text_from_native(text: HFTextConfig) -> dict[str, Any]:
    """A clipforge HF text config → open_clip's ``text_cfg`` (the hub model whose sizes it has)."""
    names = [n for n, (kind, fields) in HF_MODELS.items()
             if kind == text.type and text == type(text)(
                 **fields, context_length=text.context_length, pooler=text.pooler,
                 proj=text.proj)]  # fmt: skip
    if not names:
        raise ConfigError(f"no HF hub model open_clip can name has this text tower ({text})")
    cfg: dict[str, Any] = {"hf_model_name": names[0], "hf_tokenizer_name": names[0],
                           "hf_pooler_type": _OPEN_CLIP_POOLERS[text.pooler],
                           "hf_proj_type": None if text.proj == "none" else text.proj}  # fmt: skip
    if text.context_length != 77:
        cfg["context_length"] = text.context_length
    return cfg


def config_to_native(model_cfg: dict[str, Any]) -> ClipConfig:
    """open_clip ``model_cfg`` with an HF text tower → :class:`ClipConfig` (the image tower
    is open_clip's ViT, or a timm SigLIP trunk with ``init_logit_bias``)."""
    vision = dict(model_cfg.get("vision_cfg") or {})
    text = text_to_native(dict(model_cfg.get("text_cfg") or {}))
    if vision.get("timm_model_name"):
        return ClipConfig(
            embed_dim=model_cfg["embed_dim"], vision=siglip_keys.vision_to_native(vision),
            text=text, norm_eps=1e-6, init_logit_bias=model_cfg.get("init_logit_bias"),
        )  # fmt: skip
    plain = open_clip.config_to_native({**model_cfg, "text_cfg": {}})
    return plain.replace(text=text, init_logit_bias=model_cfg.get("init_logit_bias"))


def config_from_native(cfg: ClipConfig) -> dict[str, Any]:
    """:class:`ClipConfig` with an HF text tower → open_clip ``model_cfg``."""
    if not isinstance(cfg.text, _HF_TEXT_CLASSES):
        raise ConfigError("not an HF text tower")
    out: dict[str, Any] = {"embed_dim": cfg.embed_dim}
    if isinstance(cfg.vision, SigLipVisionConfig):
        out.update(custom_text=True, init_logit_bias=cfg.init_logit_bias,
                   vision_cfg=siglip_keys.vision_from_native(cfg))  # fmt: skip
        if cfg.norm_eps != 1e-6:
            raise ConfigError("open_clip's SigLIP trunks use LayerNorm eps 1e-6")
    else:
        plain = open_clip.config_from_native(cfg.replace(text=TextConfig()))
        out.update(quick_gelu=plain["quick_gelu"], vision_cfg=plain["vision_cfg"])
        if cfg.init_logit_bias is not None:
            out["init_logit_bias"] = cfg.init_logit_bias
    out["text_cfg"] = text_from_native(cfg.text)
    return out


def read_tokenizer(directory: Path) -> Any:
    """The tokenizer files in an open_clip directory (open_clip's ``local-dir:`` reads them
    from there too), else ``None`` (the architecture's hub tokenizer applies)."""
    if not any((directory / n).is_file() for n in (TOKENIZER_FILE, *SPM_FILES)):
        return None
    try:
        return tokenizer_from_dir(directory, 77, "hf")
    except ImportError as err:  # a SentencePiece model without transformers: weights still load
        warnings.warn(f"{err}; model.tokenize will ask for a tokenizer", stacklevel=2)
        return None


def _owns_config(model_cfg: dict[str, Any]) -> bool:
    """HF text towers of contrastive models (CoCa's belong to :mod:`.coca_keys`)."""
    has_hf_text = bool((model_cfg.get("text_cfg") or {}).get("hf_model_name"))
    return has_hf_text and not model_cfg.get("multimodal_cfg")


open_clip.register_family(
    LayoutFamily.of(
        "hf_text", layout_of(__name__), owns_config=_owns_config,
        owns_model=lambda cfg: isinstance(cfg.text, _HF_TEXT_CLASSES) and cfg.decoder is None,
        read_tokenizer=read_tokenizer,
    )
)  # fmt: skip

#: bare open_clip state dicts with an HF text tower (``text.transformer.*`` in transformers'
#: names), recognised before clipforge's own layout and open_clip's SigLIP
FORMAT = CheckpointFormat.of_state_layout("open_clip_hf_text", layout_of(__name__), priority=45)
