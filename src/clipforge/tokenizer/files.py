"""A model's tokenizer written beside exported or saved weights, and read back (no torch).

The spec is a small JSON-able dict: ``{"kind": "clip_bpe"}`` for CLIP's bundled BPE
vocabulary, ``{"kind": "sentencepiece", "file": "tokenizer.json", "pad_token": ..., "clean":
..., "context_length": ...}`` for a checkpoint's own SentencePiece vocabulary (SigLIP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from .bpe import ClipTokenizer
from .sentencepiece import SentencePieceTokenizer

__all__ = ["load_tokenizer", "save_tokenizer"]


def save_tokenizer(tokenizer: Any, directory: str | Path) -> dict[str, Any]:
    """Write what ``tokenizer`` needs into ``directory``; its spec for :func:`load_tokenizer`.

    A tokenizer of another type cannot be carried: ``ValueError``.
    """
    if isinstance(tokenizer, SentencePieceTokenizer):
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
    raise UsageError(f"unknown tokenizer kind {kind!r} (known: clip_bpe, sentencepiece)")
