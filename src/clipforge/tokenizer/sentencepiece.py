"""SigLIP's SentencePiece tokenizers, read from a checkpoint's own ``tokenizer.json``.

Two pitfalls cost SigLIP users accuracy (mteb PR #1424, CLIP_benchmark #135), and this
tokenizer handles both for them:

- **canonicalisation**: SigLIP was trained on canonicalised text (big_vision's rule, as in
  open_clip's ``clean="canonicalize"``): ftfy + HTML unescape, ``_`` → space, ASCII
  punctuation removed, lower-cased, whitespace collapsed;
- **padding**: the text tower is bidirectional and pools the last position, so every
  sequence is padded to the full context with the checkpoint's pad id (SigLIP pads with
  ``</s>``), never to the longest in the batch.

The ``tokenizers`` library (a dependency of transformers) applies the file's normaliser,
pre-tokeniser, model (SigLIP's Unigram, SigLIP 2's Gemma BPE with byte fallback) and
template (``$A </s>`` for SigLIP, ``$A <eos>`` for SigLIP 2). As in transformers ≥ 5 (and so
open_clip), the file's template is authoritative — ``add_bos_token``/``add_eos_token`` in
``tokenizer_config.json`` do not change it — and the config sets the padding side
(``padding_side``, else the tokenizer class's default: left for Gemma's classes, right
otherwise).
The module imports without torch
(:meth:`SentencePieceTokenizer.to_array` serves the ONNX runtime).
"""

from __future__ import annotations

import html
import json
import string
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ftfy
import numpy as np

from ..errors import UsageError
from .base import ArrayTokenizer

if TYPE_CHECKING:
    pass

__all__ = [
    "TOKENIZER_CONFIG",
    "TOKENIZER_FILE",
    "SentencePieceTokenizer",
    "canonicalize",
    "spiece_to_backend",
]

TOKENIZER_FILE, TOKENIZER_CONFIG = "tokenizer.json", "tokenizer_config.json"

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def canonicalize(text: str) -> str:
    """big_vision's text canonicalisation (lower case, no ASCII punctuation, single spaces)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    return " ".join(text.split())


def whitespace_clean(text: str) -> str:
    """open_clip's ``clean="whitespace"`` (its ``HFTokenizer`` default): ftfy, HTML
    unescaped twice, whitespace collapsed; case and punctuation kept."""
    return " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split())


_CLEANERS = {"canonicalize": canonicalize, "whitespace": whitespace_clean}


def _tokenizer_config(directory: Path) -> dict[str, Any]:
    """special_tokens_map.json overlaid by tokenizer_config.json (``{}`` when neither exists)."""
    config: dict[str, Any] = {}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / file
        if path.is_file():
            config.update(json.loads(path.read_text(encoding="utf-8")))
    return config


def _special_token(config: dict[str, Any], name: str) -> str | None:
    """``name`` (e.g. ``pad_token``) from a tokenizer config: a string or ``{"content": ...}``."""
    value = config.get(name)
    if isinstance(value, dict):  # {"content": "</s>", ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


#: transformers' tokenizer classes whose default ``padding_side`` is "left"
_LEFT_PADDING_CLASSES = {"GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer"}


def _padding_side(config: dict[str, Any]) -> str:
    """The config's ``padding_side``, else the default of its transformers tokenizer class."""
    side = config.get("padding_side")
    if side is None:
        side = "left" if config.get("tokenizer_class") in _LEFT_PADDING_CLASSES else "right"
    if side not in ("left", "right"):
        raise UsageError(f"padding_side must be 'left' or 'right', got {side!r}")
    return side


def spiece_to_backend(spiece_model: str | Path) -> Any:
    """A ``tokenizers`` backend for a SentencePiece ``spiece.model`` (Hugging Face SigLIP
    directories ship no ``tokenizer.json``), converted by transformers' ``SpmConverter``
    with SigLIP's ``$A </s>`` template. Needs transformers, sentencepiece and protobuf."""
    from tokenizers import processors

    try:
        from transformers import SiglipTokenizer
        from transformers.convert_slow_tokenizer import SpmConverter
    except ImportError as err:  # transformers without sentencepiece lacks SiglipTokenizer
        raise ImportError(
            f"reading {spiece_model} needs transformers, sentencepiece and protobuf "
            "(pip install 'clipforge[dev]', or ship the checkpoint's tokenizer.json)"
        ) from err
    backend = SpmConverter(SiglipTokenizer(vocab_file=str(spiece_model))).converted()
    eos = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", eos)]
    )
    return backend


class SentencePieceTokenizer(ArrayTokenizer):
    """Texts → ``(N, context_length)`` int64 ids, canonicalised and padded to the context.

    Args:
        tokenizer_file: the checkpoint's ``tokenizer.json``, or its ``spiece.model``
            (converted by :func:`spiece_to_backend`).
        context_length: pad/truncate to this many ids (the model's text context).
        pad_token: the padding token; ``None`` reads the checkpoint's tokenizer config next
            to the file and falls back to its end-of-sequence token ``</s>`` (SigLIP's).
        clean: ``"canonicalize"`` (SigLIP, SigLIP 2), ``"whitespace"`` (open_clip's
            ``HFTokenizer`` default: MetaCLIP 2's XLM-V) or ``"none"``.
    """

    def __init__(
        self,
        tokenizer_file: str | Path,
        context_length: int = 64,
        pad_token: str | None = None,
        clean: str = "canonicalize",
    ) -> None:
        from tokenizers import Tokenizer

        if clean not in (*_CLEANERS, "none"):
            raise UsageError(
                f"clean must be 'canonicalize', 'whitespace' or 'none', got {clean!r}"
            )
        path = Path(tokenizer_file)
        config = _tokenizer_config(path.parent)
        if path.suffix == ".model":
            self.backend = spiece_to_backend(path)
        else:
            self.backend = Tokenizer.from_file(str(path))
        self.backend.no_truncation()
        self.backend.no_padding()
        self.context_length = context_length
        self.clean = clean
        self.padding_side = _padding_side(config)
        pad_token = pad_token or _special_token(config, "pad_token") or "</s>"
        pad_id = self.backend.token_to_id(pad_token)
        if pad_id is None:
            raise UsageError(f"pad token {pad_token!r} is not in the vocabulary of {path}")
        self.pad_token, self.pad_id = pad_token, pad_id
        self._configured: dict[tuple[int, bool], Tokenizer] = {}

    def _backend(self, length: int, truncate: bool):
        """A copy of the backend padding (and truncating) to ``length``; cached, never mutated."""
        key = (length, truncate)
        if key not in self._configured:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(self.backend.to_str())
            if truncate:  # the end-of-sequence token is kept, as transformers' truncation does
                backend.enable_truncation(max_length=length)
            backend.enable_padding(
                length=length, pad_id=self.pad_id, pad_token=self.pad_token,
                direction=self.padding_side,
            )  # fmt: skip
            self._configured[key] = backend
        return self._configured[key]

    @classmethod
    def from_dir(
        cls, directory: str | Path, context_length: int = 64, clean: str = "canonicalize"
    ) -> SentencePieceTokenizer:
        """The tokenizer of a checkpoint directory: its ``tokenizer.json``, else its
        ``spiece.model``."""
        path = Path(directory) / TOKENIZER_FILE
        file = path if path.is_file() else path.with_name("spiece.model")
        return cls(file, context_length, clean=clean)

    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (its pad token) into
        ``directory`` (as hub checkpoints hold them); returns the settings as a dict."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TOKENIZER_FILE).write_text(self.backend.to_str(), encoding="utf-8")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": self.pad_token,
                  "padding_side": self.padding_side,
                  "model_max_length": self.context_length}  # fmt: skip
        (directory / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", "utf-8")
        return {"kind": "sentencepiece", "file": TOKENIZER_FILE, "pad_token": self.pad_token,
                "clean": self.clean, "context_length": self.context_length}  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (DataLoader workers): the backend travels as its JSON."""
        state = dict(self.__dict__, backend=self.backend.to_str(), _configured={})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        vars(self).update(state, backend=Tokenizer.from_str(state["backend"]))

    def to_array(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
        truncate: bool = True,
    ) -> np.ndarray:
        """Texts → ``(N, context_length)`` int64 ids (numpy; no torch needed)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        if self.clean in _CLEANERS:
            texts = [_CLEANERS[self.clean](t) for t in texts]
        ids = [e.ids for e in self._backend(length, truncate).encode_batch(texts)]
        too_long = [i for i, row in enumerate(ids) if len(row) > length]
        if too_long:
            raise UsageError(f"text {too_long[0]} is longer than the context ({length} ids)")
        return np.asarray(ids, dtype=np.int64).reshape(len(texts), length)
