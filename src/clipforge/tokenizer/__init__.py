"""CLIP byte-level BPE tokenizer (ids identical to OpenAI CLIP / open_clip)."""

from clipforge.tokenizer.bpe import (
    DEFAULT_CONTEXT_LENGTH,
    ClipTokenizer,
    get_tokenizer,
    tokenize,
)

__all__ = ["DEFAULT_CONTEXT_LENGTH", "ClipTokenizer", "get_tokenizer", "tokenize"]
