"""A model's tokenizer written beside exported or saved weights, and read back (no torch).

The spec is a small JSON-able dict: ``{"kind": "clip_bpe"}`` for CLIP's bundled BPE
vocabulary, ``{"kind": "sentencepiece", "file": "tokenizer.json", "pad_token": ..., "clean":
..., "context_length": ...}`` for a checkpoint's own SentencePiece vocabulary (SigLIP),
``{"kind": "hf", ..., "language": ...}`` for an HF text tower's (XLM-R, mT5, NLLB, RoBERTa).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from .bpe import ClipTokenizer
from .hf import HF_MARKER, HF_TOKENIZER_CLASSES, HFTokenizer, model_type_class, tokenizer_class
from .sentencepiece import SentencePieceTokenizer, _tokenizer_config

__all__ = ["load_tokenizer", "save_tokenizer", "tokenizer_from_dir"]


def save_tokenizer(tokenizer: Any, directory: str | Path) -> dict[str, Any]:
    """Write what ``tokenizer`` needs into ``directory``; its spec for :func:`load_tokenizer`.

    A tokenizer of another type cannot be carried: ``ValueError``.
    """
    if isinstance(tokenizer, SentencePieceTokenizer):  # HFTokenizer too (a subclass)
        return tokenizer.save(directory)
    if isinstance(tokenizer, ClipTokenizer):
        return {"kind": "clip_bpe"}
    raise UsageError(
        f"cannot write a {type(tokenizer).__name__} tokenizer (known: ClipTokenizer, "
        "SentencePieceTokenizer)"
    )


def load_tokenizer(spec: dict[str, Any], directory: str | Path) -> Any:
    """The tokenizer a :func:`save_tokenizer` spec describes, its files read from ``directory``."""
    kind = spec.get("kind")
    if kind == "clip_bpe":
        return ClipTokenizer()
    if kind == "sentencepiece":
        return SentencePieceTokenizer(
            Path(directory) / spec["file"],
            context_length=int(spec["context_length"]),
            pad_token=spec["pad_token"],
            clean=spec["clean"],
        )
    if kind == "hf":
        return HFTokenizer(
            Path(directory) / spec["file"],
            context_length=int(spec["context_length"]),
            clean=spec["clean"],
            language=spec.get("language"),
            pad_token=spec["pad_token"],
            strip_sep_token=bool(spec.get("strip_sep_token", False)),
        )
    raise UsageError(f"unknown tokenizer kind {kind!r} (known: clip_bpe, sentencepiece, hf)")


def tokenizer_from_dir(
    directory: str | Path,
    context_length: int,
    kind: str | None = None,
    strip_sep_token: bool = False,
) -> SentencePieceTokenizer:
    """A checkpoint directory's own tokenizer: :class:`HFTokenizer` for ``kind="hf"`` or a
    ``tokenizer_config.json`` naming an HF text tower's class (XLM-R, T5, NLLB, RoBERTa),
    else SigLIP's :class:`SentencePieceTokenizer` (``strip_sep_token``: see
    :class:`HFTokenizer`; a saved one records it)."""
    config = _tokenizer_config(Path(directory))
    cls = tokenizer_class(config) or model_type_class(Path(directory))
    if kind == "hf" or cls in HF_TOKENIZER_CLASSES or config.get(HF_MARKER):
        marker = config.get(HF_MARKER) or {}
        strip = strip_sep_token or bool(marker.get("strip_sep_token", False))
        return HFTokenizer.from_dir(
            directory, context_length, marker.get("clean", "whitespace"), strip_sep_token=strip
        )
    return SentencePieceTokenizer.from_dir(directory, context_length)
