"""Exact, fast re-implementation of the CLIP byte-level BPE tokenizer.

Produces ids identical to OpenAI CLIP / ``open_clip.tokenizer.SimpleTokenizer``
(``clean="lower"``) while being several times faster on typical captions:

* Fast path: ``ftfy.fix_text`` and ``html.unescape`` provably leave ASCII text
  made of printable characters, tab, LF and CR and without ``&`` unchanged, so
  such text is only lower-cased (whitespace needs no collapsing: no regex
  match can contain or cross whitespace).
* All fast-path texts of a batch are joined, lower-cased and split on
  whitespace in one pass; every whitespace-free chunk (e.g. ``"dog,"``) is
  mapped to its ids through a cache, so the regex and BPE only run on new
  chunks.
* The output tensor is assembled with vectorised numpy from one flat array.

Texts outside the fast path go through the full reference normalisation.
"""

from __future__ import annotations

import gzip
import html
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast

import ftfy
import numpy as np
import regex

from ..errors import UsageError
from .base import ArrayTokenizer

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_CONTEXT_LENGTH", "ClipTokenizer", "get_tokenizer", "tokenize"]

DEFAULT_CONTEXT_LENGTH = 77
VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
_NUM_MERGES = 49152 - 256 - 2
_WORD_END = "</w>"
_MAX_CACHE = 1 << 20
_CONTRACTIONS = r"'s|'t|'re|'ve|'m|'ll|'d"
# Reference pre-tokenizer (used with regex.IGNORECASE on cleaned text).
_PATTERN = "|".join(SPECIAL_TOKENS) + "|" + _CONTRACTIONS + r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
# The same pattern restricted to lower-cased ASCII text: there \p{L} is [a-z]
# and \p{N} is [0-9]. The stdlib engine is about twice as fast here.
_ASCII_PATTERN = re.compile(
    "|".join(SPECIAL_TOKENS) + "|" + _CONTRACTIONS + r"|[a-z]+|[0-9]|[^\sa-z0-9]+"
)
# Batch separator: a whitespace-delimited chunk of its own; "\x00" never occurs
# in fast-path text and is never cached.
_SEP_TOKEN = "\x00"
_SEP = f" {_SEP_TOKEN} "
# Characters that exclude an ASCII text from the fast path: '&' (HTML entities)
# and control characters other than tab/LF/CR (ftfy removes or rewrites them).
_NOT_FAST = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f&]")
_NOT_FAST_BATCH = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f&]")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character (GPT-2 / CLIP scheme)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _read_merges(vocab_path: str | Path | None) -> list[tuple[str, str]]:
    """Read the BPE merge list (first line is a header) from the gzip file."""
    if vocab_path is None:
        raw = (
            resources.files(__package__ or "clipforge.tokenizer")
            .joinpath(VOCAB_FILENAME)
            .read_bytes()
        )
    else:
        raw = Path(vocab_path).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]  # type: ignore[misc]


class _Tables(NamedTuple):
    encoder: dict[str, int]
    decoder: dict[int, str]
    bpe_ranks: dict[tuple[str, str], int]


def _tables(vocab_path: str | Path | None) -> _Tables:
    """The vocabulary tables of ``vocab_path``, parsed once per file version (path, size,
    mtime): reading the gzip file is ~50 ms, and every model built or loaded makes a
    tokenizer. Callers copy the dicts, so instances never share mutable state."""
    if vocab_path is None:
        return _parsed_tables(None, 0, 0)
    path = Path(vocab_path).resolve()
    stat = path.stat()
    return _parsed_tables(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _parsed_tables(path: str | None, size: int, mtime_ns: int) -> _Tables:
    merges = _read_merges(path)
    encoder = {tok: i for i, tok in enumerate(_build_vocab(merges))}
    decoder = {i: tok for tok, i in encoder.items()}
    return _Tables(encoder, decoder, {m: i for i, m in enumerate(merges)})


def _build_vocab(merges: list[tuple[str, str]]) -> list[str]:
    """Vocabulary order: bytes, bytes + '</w>', merges, special tokens."""
    chars = list(bytes_to_unicode().values())
    return [*chars, *(c + _WORD_END for c in chars), *("".join(m) for m in merges), *SPECIAL_TOKENS]


def clean_text(text: str) -> str:
    """Reference normalisation: ftfy, double html unescape, whitespace, lower."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def is_fast_text(text: str) -> bool:
    """True if ``text`` may skip ``clean_text`` except for lower-casing."""
    return text.isascii() and _NOT_FAST.search(text) is None


def _all_fast(texts: Sequence[str], joined: str) -> bool:
    """True if every text of ``joined`` (``_SEP``-joined ``texts``) is fast."""
    return (
        joined.isascii()
        and _NOT_FAST_BATCH.search(joined) is None
        and joined.count(_SEP_TOKEN) == len(texts) - 1
    )


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Merge every non-overlapping occurrence of ``pair``, left to right."""
    first, second = pair
    merged: list[str] = []
    i, n = 0, len(symbols)
    while i < n:
        if i < n - 1 and symbols[i] == first and symbols[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


class ClipTokenizer(ArrayTokenizer):
    """CLIP BPE tokenizer with ids identical to open_clip's ``SimpleTokenizer``."""

    def __init__(
        self,
        vocab_path: str | Path | None = None,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
    ) -> None:
        tables = _tables(vocab_path)
        self.encoder: dict[str, int] = dict(tables.encoder)
        self.decoder: dict[int, str] = dict(tables.decoder)
        self.bpe_ranks: dict[tuple[str, str], int] = dict(tables.bpe_ranks)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.context_length = context_length
        self.sot_token_id = self.encoder[SPECIAL_TOKENS[0]]
        self.eot_token_id = self.encoder[SPECIAL_TOKENS[1]]
        self.pattern = regex.compile(_PATTERN, regex.IGNORECASE)
        # Maps a whitespace-free string (a regex word or an ASCII chunk) to the
        # ids of its tokenization; both agree since a word re-tokenizes to itself.
        self._cache: dict[str, tuple[int, ...]] = {}
        self._reset_cache()

    @property
    def vocab_size(self) -> int:
        """Number of entries in the vocabulary (49,408 for CLIP)."""
        return len(self.encoder)

    # ------------------------------------------------------------------ BPE
    def _reset_cache(self) -> None:
        """Empty the cache, keeping the special tokens."""
        self._cache.clear()
        for tok in SPECIAL_TOKENS:
            self._cache[tok] = (self.encoder[tok],)

    def _store(self, key: str, ids: tuple[int, ...]) -> tuple[int, ...]:
        """Cache ``ids`` under ``key`` (bounded size) and return them."""
        if len(self._cache) >= _MAX_CACHE:
            self._reset_cache()
        if key != _SEP_TOKEN:
            self._cache[key] = ids
        return ids

    def _bpe(self, symbols: list[str]) -> list[str]:
        """Apply BPE merges (lowest rank first) to a list of symbols."""
        ranks = self.bpe_ranks
        while len(symbols) > 1:
            best_rank, best = len(ranks), None
            for pair in zip(symbols[:-1], symbols[1:], strict=True):
                rank = ranks.get(pair)
                if rank is not None and rank < best_rank:
                    best_rank, best = rank, pair
            if best is None:
                break
            symbols = _merge_pair(symbols, best)
        return symbols

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """Ids of one pre-tokenized word (byte mapping + BPE), cached."""
        ids = self._cache.get(word)
        if ids is None:
            symbols = [self.byte_encoder[b] for b in word.encode("utf-8")]
            symbols[-1] += _WORD_END
            ids = self._store(word, tuple(self.encoder[s] for s in self._bpe(symbols)))
        return ids

    def _chunk_ids(self, chunk: str) -> tuple[int, ...]:
        """Ids of a lower-cased, whitespace-free ASCII chunk, cached."""
        ids = self._cache.get(chunk)
        if ids is None:
            words = _ASCII_PATTERN.findall(chunk)
            ids = self._store(chunk, tuple(chain.from_iterable(map(self._word_ids, words))))
        return ids

    # ------------------------------------------------------------- encoding
    def _encode_slow(self, text: str) -> list[int]:
        """Encode one text through the full reference normalisation."""
        words = self.pattern.findall(clean_text(text))
        return list(chain.from_iterable(map(self._word_ids, words)))

    def _chunk_seqs(
        self, chunks: list[str], n_seps: int = 0
    ) -> tuple[list[tuple[int, ...]], list[int]]:
        """Id tuples of ASCII chunks and the positions of the separators."""
        seqs: list = list(map(self._cache.get, chunks))
        if seqs.count(None) > n_seps:  # cache misses: fill once per unique chunk
            for chunk in set(chunks).difference(self._cache):
                if chunk != _SEP_TOKEN:
                    self._chunk_ids(chunk)
            seqs = list(map(self._cache.get, chunks))
        seps: list[int] = []
        i = -1
        while True:
            try:
                i = seqs.index(None, i + 1)
            except ValueError:
                return seqs, seps
            if chunks[i] == _SEP_TOKEN:
                seps.append(i)
                seqs[i] = ()
            else:
                seqs[i] = self._chunk_ids(chunks[i])

    def _encode_fast(self, joined: str, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat ids and per-text lengths of ``_SEP``-joined fast-path texts."""
        seqs, seps = self._chunk_seqs(joined.lower().split(), n_texts - 1)
        chunk_lens = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        ends = np.concatenate(([0], np.cumsum(chunk_lens)))
        flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(ends[-1]))
        edges = np.array([0, *seps, len(seqs)], dtype=np.int64)
        return flat, np.diff(ends[edges])

    def _encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Flat ids (no SOT/EOT) of all texts and the number of ids per text."""
        if not texts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        joined = _SEP.join(texts)
        if _all_fast(texts, joined):
            return self._encode_fast(joined, len(texts))
        fast = [i for i, text in enumerate(texts) if is_fast_text(text)]
        pieces: list = [None] * len(texts)
        if fast:
            flat, lengths = self._encode_fast(_SEP.join([texts[i] for i in fast]), len(fast))
            for i, piece in zip(fast, np.split(flat, np.cumsum(lengths)[:-1]), strict=True):
                pieces[i] = piece
        for i, piece in enumerate(pieces):
            if piece is None:
                pieces[i] = np.array(self._encode_slow(texts[i]), dtype=np.int64)
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        return np.concatenate(pieces), lengths

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts to BPE ids (without SOT/EOT)."""
        flat, lengths = self._encode_flat(texts)
        return [piece.tolist() for piece in np.split(flat, np.cumsum(lengths)[:-1])][: len(texts)]

    def encode(self, text: str) -> list[int]:
        """Encode one text to BPE ids (without SOT/EOT)."""
        if not is_fast_text(text):
            return self._encode_slow(text)
        seqs, _ = self._chunk_seqs(text.lower().split())
        return list(chain.from_iterable(seqs))

    def decode(self, ids: Iterable[int] | torch.Tensor | np.ndarray) -> str:
        """Decode ids to text; word ends become spaces (like the reference)."""
        tolist = getattr(ids, "tolist", None)  # torch.Tensor / np.ndarray
        values = tolist() if tolist is not None else ids
        text = "".join(self.decoder[int(i)] for i in cast(Iterable[int], values))
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace(_WORD_END, " ")

    # ------------------------------------------------------------ batching
    def to_array(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
        truncate: bool = True,
    ) -> np.ndarray:
        """Tokenize to a zero-padded ``(N, context_length)`` int64 array.

        Each row is SOT + tokens + EOT. Rows that are too long are cut to
        ``context_length`` with EOT forced last (``truncate=True``, as
        open_clip does); with ``truncate=False`` a ``ValueError`` is raised.
        """
        if isinstance(texts, str):
            texts = [texts]
        length = self.context_length if context_length is None else int(context_length)
        if length < 1:
            raise UsageError(f"context_length must be >= 1, got {length}")
        flat, lengths = self._encode_flat(texts)
        if not truncate:
            self._check_fits(texts, lengths, length)
        return self._pack(flat, lengths, length)

    @staticmethod
    def _check_fits(texts: Sequence[str], lengths: np.ndarray, length: int) -> None:
        """Raise ``ValueError`` for the first text longer than the context."""
        too_long = np.flatnonzero(lengths + 2 > length)
        if too_long.size:
            i = int(too_long[0])
            text = texts[i] if len(texts[i]) <= 60 else texts[i][:60] + "..."
            raise UsageError(
                f"Input text {i} ({text!r}) is too long for context length {length}: "
                f"{int(lengths[i]) + 2} tokens including SOT/EOT; use truncate=True to cut it"
            )

    def _pack(self, flat: np.ndarray, lengths: np.ndarray, length: int) -> np.ndarray:
        """Rows SOT + ids[:length - 2] + EOT, zero padded to ``length``."""
        n = len(lengths)
        out = np.zeros((n, length), dtype=np.int64)
        if length == 1:  # open_clip: [SOT, EOT][:1] with the last forced to EOT
            out[:, 0] = self.eot_token_id
            return out
        keep = np.minimum(lengths, length - 2)
        rows = np.repeat(np.arange(n), lengths)
        cols = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        mask = cols < np.repeat(keep, lengths)
        out[rows[mask], cols[mask] + 1] = flat[mask]
        out[:, 0] = self.sot_token_id
        out[np.arange(n), keep + 1] = self.eot_token_id
        return out


@lru_cache(maxsize=1)
def get_tokenizer() -> ClipTokenizer:
    """Shared default tokenizer (bundled CLIP vocab, context length 77)."""
    return ClipTokenizer()


def tokenize(
    texts: str | Sequence[str],
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    truncate: bool = True,
) -> torch.Tensor:
    """Tokenize with the shared default tokenizer (see ``ClipTokenizer.__call__``)."""
    return get_tokenizer()(texts, context_length=context_length, truncate=truncate)
