"""The model a training run trains: built or loaded with its tokenizer, prepared (LiT,
patch dropout, checkpointing, LoRA), and the loss it trains with by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..api import create_model, load
from ..errors import UsageError
from ..lora import apply_lora
from ..models import CLIP, CoCa
from ..tokenizer import get_tokenizer
from ..tokenizer.sentencepiece import TOKENIZER_FILE, SentencePieceTokenizer
from .train_config import ConfigError, LossConfig, ModelConfig, TrainConfig

__all__ = ["build_model", "loss_kind", "prepare_model"]


def build_model(cfg: ModelConfig) -> CLIP:
    """A fresh model of ``cfg.architecture`` or one loaded from ``init_from``/``pretrained``,
    with ``cfg.tokenizer`` when given (else the checkpoint's own, or CLIP's BPE)."""
    if cfg.init_from is not None:
        model = load(cfg.init_from, activation=cfg.activation)
    elif cfg.pretrained is not None:
        if not isinstance(cfg.architecture, str):
            raise UsageError("model.pretrained needs a named model.architecture")
        model = load(cfg.architecture, pretrained=cfg.pretrained, activation=cfg.activation)
    else:
        model = create_model(cfg.clip_config(), activation=cfg.activation)  # type: ignore[arg-type]
    if cfg.tokenizer is not None:
        model.set_tokenizer(_read_tokenizer(cfg.tokenizer, model.config.text.context_length))
    return model.train()


def _read_tokenizer(source: str, context_length: int) -> Any:
    """``"clip"`` (CLIP's BPE), a ``tokenizer.json`` or a directory holding one."""
    if source == "clip":

        return get_tokenizer()

    path = Path(source)
    return SentencePieceTokenizer(path / TOKENIZER_FILE if path.is_dir() else path, context_length)


def loss_kind(cfg: LossConfig, model: CLIP) -> str:
    """The configured loss, or the model's own: ``coca`` for a model with a text decoder
    (:class:`~clipforge.models.CoCa`), ``siglip`` for one with a ``logit_bias``."""
    captions = isinstance(model, CoCa)
    if cfg.kind == "coca" and not captions:
        raise ConfigError("loss.kind=coca needs a CoCa model (an architecture with a 'decoder')")
    if cfg.kind is not None:
        return cfg.kind
    if captions:
        return "coca"
    return "siglip" if model.logit_bias is not None else "clip"


def prepare_model(clip: CLIP, cfg: TrainConfig) -> None:
    """LiT locking, patch dropout, gradient checkpointing and LoRA adapters, as configured."""
    if cfg.lock_image:
        clip.tower("image").lock(cfg.unlocked_last_n_layers)
    if cfg.lock_text:
        clip.tower("text").lock(cfg.unlocked_last_n_layers)
    if cfg.patch_dropout > 0:
        clip.tower("image").set_patch_dropout(cfg.patch_dropout)
    clip.set_grad_checkpointing(cfg.grad_checkpointing)
    if cfg.lora is not None:
        lora = cfg.lora
        apply_lora(clip, lora.rank, lora.alpha, lora.dropout, lora.targets, lora.towers,
                   lora.trainable)  # fmt: skip
