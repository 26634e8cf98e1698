"""MetaCLIP 2 worldwide's tokenizers (open_clip's ``HFTokenizer``: XLM-V for the H/bigG
models, mT5 for L/14) read from a ``tokenizer.json`` by the ``tokenizers`` library give the
ids of open_clip's tokenizer and of transformers' on text in a dozen scripts.

The vocabularies are SentencePiece Unigram models trained here on the test's own text and
turned into XLM-R / T5 tokenizers by transformers' converters (the releases' structure:
``<s> $A </s>`` with pad 1, or ``$A </s>`` with pad 0), saved as hub directories."""

from __future__ import annotations

import io

import pytest
import torch
from open_clip.tokenizer import HFTokenizer

from clipforge.checkpoints.pretrained import HubTokenizer
from clipforge.configs import get_tokenizer_source
from clipforge.tokenizer.files import load_tokenizer, save_tokenizer
from clipforge.tokenizer.sentencepiece import SentencePieceTokenizer

from ..conftest import fake_hub_snapshot

#: one caption in each of Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Thai, Han,
#: Kana, Hangul, Georgian, Armenian, Tamil, plus emoji, HTML entities and odd spacing
TEXTS = [
    "A photo of a dog running on the beach.",
    "Фотография собаки,   бегущей по пляжу.",
    "Μια φωτογραφία ενός σκύλου που τρέχει στην παραλία.",
    "صورة كلب يركض على الشاطئ.",
    "תמונה של כלב שרץ על החוף.",
    "समुद्र तट पर दौड़ते कुत्ते की तस्वीर।",
    "ภาพสุนัขวิ่งบนชายหาด",
    "海滩上奔跑的狗的照片。",
    "砂浜を走る犬の写真。",
    "해변에서 달리는 개의 사진.",
    "ძაღლი სანაპიროზე დარბის",
    "Շունը վազում է լողափին",
    "கடற்கரையில் ஓடும் நாய்",
    "🐶🏖️ dog at the beach 🌊",
    "Tom &amp; Jerry\t\n  at  the   café &lt;3 ",
    "Ein Foto eines Hundes, der am Strand läuft. " * 12,  # longer than the context
]


def _spm_model(**special_ids: int) -> bytes:
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS * 8), model_writer=out, vocab_size=400,
        model_type="unigram", num_threads=1, character_coverage=1.0,
        hard_vocab_limit=False, minloglevel=2, **special_ids,
    )  # fmt: skip
    return out.getvalue()


@pytest.fixture(scope="module")
def hub_dirs(tmp_path_factory) -> dict[str, object]:
    """``{"xlm-v": dir, "mt5": dir}``: ``save_pretrained`` directories of both kinds."""
    from transformers import T5Tokenizer, XLMRobertaTokenizer

    root = tmp_path_factory.mktemp("hf_tokenizers")
    dirs = {}
    t5_ids = {"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1}  # mT5's spiece.model
    for name, cls, file, ids in (("xlm-v", XLMRobertaTokenizer, "sentencepiece.bpe.model", {}),
                                 ("mt5", T5Tokenizer, "spiece.model", t5_ids)):  # fmt: skip
        raw = root / f"{name}-spm"
        raw.mkdir()
        (raw / file).write_bytes(_spm_model(**ids))
        kwargs = {"extra_ids": 0} if cls is T5Tokenizer else {}
        cls.from_pretrained(str(raw), **kwargs).save_pretrained(str(root / name))
        dirs[name] = root / name
    return dirs


@pytest.mark.parametrize(("name", "clean"), [("xlm-v", "whitespace"), ("mt5", "canonicalize")])
@pytest.mark.parametrize("context", [77, 12])
def test_ids_equal_open_clip_and_transformers(hub_dirs, name, clean, context):
    from transformers import AutoTokenizer

    ours = SentencePieceTokenizer.from_dir(hub_dirs[name], context, clean=clean)
    ref = HFTokenizer(str(hub_dirs[name]), context_length=context, clean=clean)
    got, want = ours(TEXTS), ref(TEXTS)
    assert got.dtype == want.dtype == torch.int64
    assert torch.equal(got, want)
    hf = AutoTokenizer.from_pretrained(str(hub_dirs[name]))
    assert hf.pad_token_id == (1 if name == "xlm-v" else 0)
    if context == 77:  # short captions are padded to the context
        assert (got == hf.pad_token_id).any()
    thai = TEXTS.index("ภาพสุนัขวิ่งบนชายหาด")  # unchanged by either cleaning
    vocab_ids = hf(TEXTS[thai], truncation=True, max_length=context).input_ids
    assert got[thai, : len(vocab_ids)].tolist() == vocab_ids


def test_eos_pooling_position_is_the_first_eos(hub_dirs):
    """The worldwide text towers pool at the first ``eos_id`` (2 for XLM-V, 1 for mT5),
    which the tokenizer places after the text, truncation included."""
    for name, eos in (("xlm-v", 2), ("mt5", 1)):
        ids = SentencePieceTokenizer.from_dir(hub_dirs[name], 12, clean="whitespace")(TEXTS)
        assert ((ids == eos).sum(-1) == 1).all()
        assert (ids[-1, -1] == eos).item()  # the long caption keeps its EOS when truncated


def test_family_tokenizer_comes_from_the_architectures_hub_repo(hub_dirs, tmp_path):
    """``ViT-H-14-worldwide`` names XLM-V (whitespace-cleaned), ``ViT-L-14-worldwide`` mT5
    (canonicalised); the lazily fetched tokenizer reads the hub cache offline."""
    cases = (("ViT-H-14-worldwide", "xlm-v", "facebook/xlm-v-base", "whitespace"),
             ("ViT-L-14-worldwide", "mt5", "google/mt5-base", "canonicalize"))  # fmt: skip
    for arch, name, hub_id, clean in cases:
        source = get_tokenizer_source(arch)
        assert source is not None and source["hub_id"] == hub_id
        snapshot = fake_hub_snapshot(tmp_path / "hub", hub_id)
        for file in hub_dirs[name].iterdir():
            (snapshot / file.name).write_bytes(file.read_bytes())
        tokenizer = HubTokenizer(arch, source, 77, cache_dir=tmp_path / "hub")
        want = HFTokenizer(str(hub_dirs[name]), context_length=77, clean=clean)(TEXTS)
        assert torch.equal(tokenizer(TEXTS), want)
        assert tokenizer.resolved().clean == clean


def test_saved_tokenizer_keeps_its_cleaning(hub_dirs, tmp_path):
    ours = SentencePieceTokenizer.from_dir(hub_dirs["xlm-v"], 77, clean="whitespace")
    spec = save_tokenizer(ours, tmp_path)
    again = load_tokenizer(spec, tmp_path)
    assert spec["clean"] == "whitespace" and torch.equal(again(TEXTS), ours(TEXTS))
