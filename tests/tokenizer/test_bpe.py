"""Tests for the CLIP BPE tokenizer: exact parity with open_clip's SimpleTokenizer."""

from __future__ import annotations

import gzip
import os
import random
from importlib import resources

import numpy as np
import open_clip.tokenizer as open_clip_tokenizer  # noqa: E402  (the reference; never skipped)
import pytest
import torch

from clipforge.tokenizer import ClipTokenizer, bpe as bpe_module, get_tokenizer, tokenize

SOT, EOT = 49406, 49407


def _split(words: str) -> list[str]:
    """Whitespace-separated word list."""
    return words.split()


WORDS = _split(
    "a the of photo picture dog dogs cat kitten man woman child children girl boy is are "
    "running jumps jumping sitting on in at with near red blue green black white small big "
    "beach grass snow water street city park ball frisbee bicycle skateboard tree building "
    "two three several people crowd playing looking wearing shirt hat dress stairs isn't "
    "don't it's we're they've i'm you'll he'd CLIP GPT-4 ViT-B/32 x-ray e-mail Hello WORLD "
    "McDonald's O'Brien rock'n'roll state-of-the-art well-known"
)
ACCENTED = _split(
    "café naïve Ångström façade Müller jalapeño São Paulo Zürich œuvre Straße crème brûlée "
    "Ærø Łódź Dvořák İstanbul ſtraße ΟΔΟΣ Καλημέρα привет мир שלום مرحبا नमस्ते สวัสดี"
)
CJK = [
    "東京タワー",
    "一只猫坐在垫子上",
    "한국어 문장",
    "日本語のテキスト",
    "ＬＯＵＤ　ＮＯＩＳＥＳ",
    "中文，标点。",
]
EMOJI = ["🐶", "👍🏽", "❤️", "👨‍👩‍👧", "🎉🎉🎉", "😀😃", "🇫🇷", "☕", "✔"]
ENTITIES = [
    "&amp;",
    "&#39;",
    "&lt;b&gt;bold&lt;/b&gt;",
    "&quot;quoted&quot;",
    "&nbsp;",
    "&amp;amp;",
    "&#x2019;",
    "&hellip;",
    "Tom &amp; Jerry",
    "a & b",
    "&copy; 2021",
    "&notanentity;",
    "<b>bold</b> &amp;",
]
MOJIBAKE = [
    "cafÃ©",
    "Ã¼ber",
    "â€œquotedâ€\x9d",
    "donâ€™t",
    "Ã  la carte",
    "ðŸ˜€",
    "SchÃ¶ne GrÃ¼ÃŸe",
    "â€”",
    "Ã\xa0 bientÃ´t",
]
URLS = [
    "https://example.com/path?q=1&x=2#frag",
    "www.foo-bar.org/a_b/c.html",
    "http://127.0.0.1:8080/index.php?id=42",
    "user@example.com",
    "ftp://files.example.net/data.tar.gz",
]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", " \t\n ", "\x0c"]
CONTROL = ["\x00", "\x07", "\x1b[31m", "\x7f", "\x85", "\u200b", "\ufeff", "\x0b", "\x1c", "\x9d"]
PUNCT = [
    "12345",
    "3.14159",
    "!!!???",
    "...",
    "$100,000",
    "--",
    "'s",
    "''",
    "@#$%^",
    "(1/2)",
    "2024-01-01",
    "¡¿",
    "“curly” ‘quotes’",
    "ﬂuﬃ",
    "½ ¾",
    "①②",
    "٣٤",
]
SPECIAL = ["<|endoftext|>", "<|startoftext|>", "<start_of_text>", "<end_of_text>", "<END_OF_TEXT>"]
FRAGMENT_POOLS = [ACCENTED, CJK, EMOJI, ENTITIES, MOJIBAKE, URLS, CONTROL, PUNCT, SPECIAL]


def _ascii_sentence(rng: random.Random) -> str:
    """A random ASCII caption-like sentence."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 18))]
    if rng.random() < 0.5:
        words[0] = words[0].capitalize()
    text = " ".join(words)
    return text + rng.choice(["", ".", " .", "!", "?", ",", "...", " ;-)"])


def _mixed_text(rng: random.Random) -> str:
    """Random mix of ASCII words and fragments from every category."""
    parts = []
    for _ in range(rng.randint(1, 8)):
        if rng.random() < 0.4:
            parts.append(rng.choice(WORDS))
        else:
            parts.append(rng.choice(rng.choice(FRAGMENT_POOLS)))
        parts.append(rng.choice(WHITESPACE) if rng.random() < 0.3 else rng.choice([" ", ""]))
    return "".join(parts)


def _long_text(rng: random.Random) -> str:
    """A text far longer than the context length."""
    return " ".join(_ascii_sentence(rng) for _ in range(rng.randint(5, 20)))


def build_corpus(size: int = 10_000, seed: int = 1234) -> list[str]:
    """Deterministic varied corpus (about half pure ASCII sentences)."""
    rng = random.Random(seed)
    fixed = ["", " ", "\t\n", "\u00a0", *SPECIAL, *ENTITIES, *MOJIBAKE, *URLS, *CONTROL]
    corpus = list(fixed)
    makers = [_ascii_sentence] * 5 + [_mixed_text] * 4 + [_long_text]
    while len(corpus) < size:
        corpus.append(rng.choice(makers)(rng))
    return corpus


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return build_corpus()


@pytest.fixture(scope="module")
def ours() -> ClipTokenizer:
    return ClipTokenizer()


@pytest.fixture(scope="module")
def ref():
    return open_clip_tokenizer.SimpleTokenizer()


@pytest.fixture(scope="module")
def ref_ids(ref, corpus) -> torch.Tensor:
    return ref(corpus)


def test_corpus_is_varied(corpus):
    assert len(corpus) >= 10_000
    assert sum(text.isascii() for text in corpus) > 4000
    assert sum(not text.isascii() for text in corpus) > 2000
    assert any("&amp;" in t for t in corpus) and any("Ã©" in t for t in corpus)
    assert any(len(t) > 400 for t in corpus)


def test_vocab_and_special_ids(ours):
    assert ours.vocab_size == 49408
    assert (ours.sot_token_id, ours.eot_token_id) == (SOT, EOT)


def test_batch_ids_match_open_clip(ours, corpus, ref_ids):
    assert torch.equal(ours(corpus), ref_ids)


def test_fresh_instance_and_module_tokenize_match(corpus, ref_ids):
    assert torch.equal(ClipTokenizer()(corpus), ref_ids)
    assert torch.equal(tokenize(corpus[:3000]), open_clip_tokenizer.tokenize(corpus[:3000]))


def test_all_fast_path_batch_matches(ours, corpus, ref_ids):
    idx = [i for i, t in enumerate(corpus) if bpe_module.is_fast_text(t)]
    assert len(idx) > 4000
    assert torch.equal(ours([corpus[i] for i in idx]), ref_ids[idx])


def test_encode_matches_open_clip(ours, ref, corpus):
    sample = corpus[::5]
    assert [ours.encode(t) for t in sample] == [ref.encode(t) for t in sample]
    assert ours.encode_batch(sample) == [ref.encode(t) for t in sample]


@pytest.mark.parametrize("context_length", [1, 2, 3, 16, 100])
def test_custom_context_length_matches(ours, ref, corpus, context_length):
    sample = corpus[:2000]
    out = ours(sample, context_length=context_length)
    assert out.shape == (len(sample), context_length)
    assert torch.equal(out, ref(sample, context_length=context_length))


def test_constructor_context_length_and_vocab_path():
    path = resources.files("clipforge.tokenizer").joinpath("bpe_simple_vocab_16e6.txt.gz")
    tok = ClipTokenizer(vocab_path=str(path), context_length=16)
    out = tok(["a photo of a cat", "a dog"])
    assert out.shape == (2, 16)
    assert torch.equal(out, open_clip_tokenizer.tokenize(["a photo of a cat", "a dog"], 16))


def test_vocab_tables_are_parsed_once_per_file_version_and_never_shared(tmp_path):
    """Tokenizers of one vocabulary file share its parsed tables (read once), not their dicts;
    a file rewritten in place is read again."""
    packaged = resources.files("clipforge.tokenizer").joinpath("bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.decompress(packaged.read_bytes()).decode().split("\n")
    path = tmp_path / "vocab.txt.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode(), compresslevel=1))
    first, second = ClipTokenizer(vocab_path=path), ClipTokenizer(vocab_path=path)
    second.encoder["<not a token>"] = 0
    assert "<not a token>" not in first.encoder and first.encoder is not second.encoder
    assert torch.equal(first(["a photo of a cat"]), ClipTokenizer()(["a photo of a cat"]))
    # the merge that makes "photo" moved to rank 0 of a rewritten file: reread, ranks move
    header, merges = lines[0], lines[1:]
    target = next(m for m in merges if m.replace(" ", "") == "photo</w>")
    merges.remove(target)
    path.write_bytes(gzip.compress("\n".join([header, target, *merges]).encode(), compresslevel=1))
    os.utime(path, ns=(0, 10**18))  # a new mtime even within the clock's resolution
    rewritten = ClipTokenizer(vocab_path=path)
    assert rewritten.bpe_ranks[tuple(target.split())] == 0
    assert rewritten.bpe_ranks != first.bpe_ranks


def test_small_cache_bound_keeps_ids_exact(monkeypatch, corpus, ref_ids):
    monkeypatch.setattr(bpe_module, "_MAX_CACHE", 64)
    sample = corpus[:1500]
    assert torch.equal(ClipTokenizer()(sample), ref_ids[:1500])


def test_shape_dtype_padding_and_special_placement(ours):
    texts = ["a photo of a cat", "", "hello world!"]
    out = ours(texts)
    assert out.shape == (3, 77) and out.dtype == torch.long
    for row, text in zip(out, texts, strict=True):
        ids = ours.encode(text)
        n = len(ids) + 2
        assert row[0] == SOT and row[n - 1] == EOT
        assert row[1 : n - 1].tolist() == ids
        assert not row[n:].any()
    assert out[1, :2].tolist() == [SOT, EOT]
    assert ours("a single string").shape == (1, 77)
    assert ours([]).shape == (0, 77)


def test_truncation_keeps_eot_last(ours, corpus):
    long_text = " ".join(corpus[10:40])
    ids = ours.encode(long_text)
    assert len(ids) > 100
    out = ours([long_text, "short"], context_length=77)
    assert out[0, -1] == EOT and out[0, 0] == SOT
    assert out[0, 1:-1].tolist() == ids[:75]
    assert out[1, 2] == EOT


def test_truncate_false_raises_clear_error(ours):
    text = "a very long caption " * 40
    with pytest.raises(ValueError, match=r"too long for context length 77") as err:
        ours(["fine", text], truncate=False)
    assert "a very long caption" in str(err.value)
    assert f"{len(ours.encode(text)) + 2} tokens" in str(err.value)
    with pytest.raises(ValueError):
        tokenize(text, truncate=False)
    fits = ["a photo of a dog", "x " * 75]
    assert torch.equal(ours(fits, truncate=False), ours(fits))


def test_invalid_context_length(ours):
    with pytest.raises(ValueError):
        ours("a cat", context_length=0)


def test_decode(ours, ref, corpus):
    text = "a photo of a cat, sitting on the mat!"
    assert ours.decode(ours.encode(text)) == "a photo of a cat , sitting on the mat ! "
    assert ours.decode(ours.encode("Hello World")).strip() == "hello world"
    assert ours.decode(torch.tensor(ours.encode("café"))).strip() == "café"
    assert ours.decode(np.array(ours.encode("🐶 dog"))).strip() == "🐶 dog"
    for text in corpus[:500]:
        ids = ref.encode(text)
        assert ours.decode(ids) == ref.decode(ids)


def test_get_tokenizer_is_cached():
    assert get_tokenizer() is get_tokenizer()
    assert isinstance(get_tokenizer(), ClipTokenizer)
