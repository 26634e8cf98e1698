"""The tokenizers of the HF text towers (XLM-R, mT5, NLLB-200, RoBERTa) give the ids open_clip's
``HFTokenizer`` (transformers) gives, on text in a dozen scripts, without transformers.

No hub file can be fetched here: each test trains a small SentencePiece (Unigram or BPE)
or byte-level BPE model on multilingual text, lets transformers' own class read it (as
``from_pretrained`` reads a checkpoint) and save its ``tokenizer.json``, then compares.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import open_clip
import pytest
import sentencepiece as spm
import torch

from clipforge.errors import UsageError
from clipforge.tokenizer.files import load_tokenizer, save_tokenizer
from clipforge.tokenizer.hf import HFTokenizer, clean_text

#: captions in 13 scripts (Latin with diacritics, Cyrillic, Greek, Arabic, Hebrew, Devanagari,
#: Thai, Han, Kana, Hangul, emoji, Armenian, Georgian), with odd spacing and HTML entities
CAPTIONS = [
    "A photo of a dog running on the beach.",
    "Ein Hund läuft über die Straße; café crème, naïve façade.",
    "Собака бежит по пляжу, а кошка спит.",
    "Ένας σκύλος τρέχει στην παραλία.",
    "كلب يجري على الشاطئ في الصباح",
    "כלב רץ על החוף בבוקר",
    "एक कुत्ता समुद्र तट पर दौड़ रहा है।",
    "สุนัขกำลังวิ่งอยู่บนชายหาด",
    "一只狗在海滩上奔跑。",
    "犬がビーチを走っています。",
    "개가 해변에서 달리고 있다.",
    "🐶🏖️ dog + beach = ❤️ 👍🏽",
    "Շունը վազում է լողափում։ ძაღლი სანაპიროზე დარბის.",
    "  spaces\tand\nnewlines &amp; entities &lt;3  ",
    "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ and ﬁ ligatures, ①②③",
    "",
]
SCRIPTS = 13


def _corpus(path: Path) -> Path:
    lines = [c for c in CAPTIONS if c.strip()] * 20
    lines += [" ".join(c.split()[::-1]) for c in CAPTIONS if c.strip()] * 10
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _train_spm(tmp: Path, model_type: str, name: str, **specials) -> Path:
    prefix = tmp / "spm"
    spm.SentencePieceTrainer.train(
        input=str(_corpus(tmp / "corpus.txt")), model_prefix=str(prefix), vocab_size=600,
        model_type=model_type, character_coverage=1.0, hard_vocab_limit=False,
        normalization_rule_name="nmt_nfkc", **specials,
    )  # fmt: skip
    target = tmp / "slow" / name
    target.parent.mkdir()
    shutil.copy(f"{prefix}.model", target)
    return target


def _transformers_dir(tmp: Path, slow: Path, config: dict) -> Path:
    """transformers' class reads the SentencePiece model (``from_pretrained``) and saves the
    checkpoint layout: ``tokenizer.json`` + ``tokenizer_config.json``."""
    from transformers import AutoTokenizer

    (slow.parent / "tokenizer_config.json").write_text(json.dumps(config))
    out = tmp / "checkpoint"
    AutoTokenizer.from_pretrained(str(slow.parent)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Checkpoint tokenizer directories as transformers writes them, one per family."""
    root = tmp_path_factory.mktemp("hf_tokenizers")
    out = {}
    for family, model_type, name, config, specials in [
        ("xlm-roberta", "unigram", "sentencepiece.bpe.model",
         {"tokenizer_class": "XLMRobertaTokenizer"},
         dict(bos_id=0, pad_id=1, eos_id=2, unk_id=3)),
        ("mt5", "unigram", "spiece.model", {"tokenizer_class": "T5Tokenizer"},
         dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)),
        ("nllb", "bpe", "sentencepiece.bpe.model",
         {"tokenizer_class": "NllbTokenizer", "src_lang": "eng_Latn",
          "extra_special_tokens": _nllb_codes()},
         dict(bos_id=0, pad_id=1, eos_id=2, unk_id=3)),
    ]:  # fmt: skip
        tmp = root / family
        tmp.mkdir()
        out[family] = _transformers_dir(tmp, _train_spm(tmp, model_type, name, **specials), config)
        out[f"{family}-spm"] = tmp / "slow"
    out["roberta"] = _roberta_dir(root / "roberta")
    return out


def _nllb_codes() -> list[str]:
    """NLLB-200's 202 language codes (added to the vocabulary as special tokens, as the
    hub checkpoints have them)."""
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    return list(FAIRSEQ_LANGUAGE_CODES)


def _roberta_dir(tmp: Path) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer

    tmp.mkdir()
    trainer = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer.train([str(_corpus(tmp / "corpus.txt"))], vocab_size=800, special_tokens=specials)
    slow = tmp / "slow"
    slow.mkdir()
    trainer.save_model(str(slow))
    (slow / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    AutoTokenizer.from_pretrained(str(slow)).save_pretrained(str(tmp / "checkpoint"))
    return tmp / "checkpoint"


def _reference(directory: Path, **kwargs) -> open_clip.tokenizer.HFTokenizer:
    return open_clip.tokenizer.HFTokenizer(str(directory), context_length=32, **kwargs)


@pytest.mark.parametrize("family", ["xlm-roberta", "mt5", "nllb", "roberta"])
def test_ids_equal_open_clips_in_every_script(checkpoints, family):
    ours = HFTokenizer.from_dir(checkpoints[family], context_length=32)
    want = _reference(checkpoints[family])(CAPTIONS)
    got = ours(CAPTIONS)
    assert got.dtype == torch.long and got.shape == (len(CAPTIONS), 32)
    assert torch.equal(got, want), [
        i for i in range(len(CAPTIONS)) if not torch.equal(got[i], want[i])
    ]
    assert len({tuple(r) for r in got.tolist()}) == len(CAPTIONS)  # every caption distinct
    unk = ours.backend.token_to_id("<unk>")
    assert (got[: SCRIPTS - 1] == unk).sum() == 0  # the vocabulary covers every script


@pytest.mark.parametrize("family", ["xlm-roberta", "mt5", "nllb"])
def test_sentencepiece_model_without_tokenizer_json(checkpoints, family):
    """A checkpoint that ships only its SentencePiece model (mT5's ``spiece.model``)."""
    ours = HFTokenizer.from_dir(checkpoints[f"{family}-spm"], context_length=32)
    assert torch.equal(ours(CAPTIONS), _reference(checkpoints[family])(CAPTIONS))


def test_the_class_pipeline_not_the_files_decides(checkpoints, tmp_path):
    """transformers ≥ 5 rebuilds these classes' pipelines from the vocabulary: a hub file
    whose BPE model does not fuse unknown characters (older NLLB conversions) still gives one
    ``<unk>`` per run of them, as the class does, and so does ours; the file run as it is
    would give one per character."""
    from tokenizers import Tokenizer

    directory = tmp_path / "old"
    shutil.copytree(checkpoints["nllb"], directory)
    data = json.loads((directory / "tokenizer.json").read_text())
    data["model"]["fuse_unk"] = False
    (directory / "tokenizer.json").write_text(json.dumps(data))
    texts = ["龘龘龘 dog 𓀀𓀁", *CAPTIONS]
    want = _reference(directory)(texts)
    assert torch.equal(HFTokenizer.from_dir(directory, 32)(texts), want)
    raw = Tokenizer.from_file(str(directory / "tokenizer.json")).encode(texts[0]).ids
    assert raw.count(3) > (want[0] == 3).sum()  # unfused: more <unk> ids


def test_nllb_language_codes(checkpoints):
    """Each language code as transformers' ``NllbTokenizer(src_lang=...)`` places it (first).
    (open_clip's ``HFTokenizer.set_language`` is undone by transformers ≥ 5, which switches
    back to ``src_lang`` on every padded call: open_clip tokenizes NLLB as ``eng_Latn``
    whatever it is told; passing ``src_lang`` works.)"""
    ours = HFTokenizer.from_dir(checkpoints["nllb"], context_length=32)
    for language in ("eng_Latn", "fra_Latn", "zho_Hans", "arb_Arab", "hin_Deva"):
        ours.set_language(language)
        ref = _reference(checkpoints["nllb"], src_lang=language)
        ids = ours(CAPTIONS)
        assert torch.equal(ids, ref(CAPTIONS)), language
        assert (ids[:, 0] == ours.backend.token_to_id(language)).all()  # NLLB-CLIP pools it
    with pytest.raises(UsageError, match="unknown language code 'xx_Yyyy'"):
        ours.set_language("xx_Yyyy")
    with pytest.raises(UsageError, match="no language codes"):
        HFTokenizer.from_dir(checkpoints["xlm-roberta"], language="fra_Latn")


def test_truncation_keeps_the_end_token_and_padding_fills(checkpoints):
    ours = HFTokenizer.from_dir(checkpoints["xlm-roberta"], context_length=8)
    ids = ours([CAPTIONS[0] * 5, "dog"])
    want = _reference(checkpoints["xlm-roberta"])([CAPTIONS[0] * 5, "dog"], context_length=8)
    assert torch.equal(ids, want)
    assert ids[0, -1] == ours.backend.token_to_id("</s>") and ids[1, -1] == ours.pad_id
    with pytest.raises(UsageError, match="longer than the context"):
        ours(CAPTIONS[0] * 5, truncate=False)


def test_save_and_load_round_trip(checkpoints, tmp_path):
    ours = HFTokenizer.from_dir(checkpoints["nllb"], context_length=32, language="rus_Cyrl")
    spec = save_tokenizer(ours, tmp_path)
    back = load_tokenizer(json.loads(json.dumps(spec)), tmp_path)
    assert isinstance(back, HFTokenizer) and back.language == "rus_Cyrl"
    assert torch.equal(back(CAPTIONS), ours(CAPTIONS))
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(ours))(CAPTIONS), ours(CAPTIONS))


def test_cleaning_is_open_clips():
    assert clean_text("  a\t b &amp;amp; c  ") == "a b & c"
    assert clean_text("  A  B ", "lower") == "a b"
    assert clean_text(" x ", "none") == " x "
