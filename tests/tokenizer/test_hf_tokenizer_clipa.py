"""CLIPA's tokenizer: ``bert-base-uncased`` read by clipforge's ``HFTokenizer`` with
``strip_sep_token`` gives open_clip's ids (``HFTokenizer(strip_sep_token=True)``: [CLS] text,
the [SEP] overwritten by 0, padded to 32). The BERT vocabulary is built here, offline."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import open_clip
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

import clipforge
from clipforge.configs import get_tokenizer_source
from clipforge.errors import UsageError
from clipforge.tokenizer.files import load_tokenizer, tokenizer_from_dir
from clipforge.tokenizer.hf import HFTokenizer

from ..conftest import fake_hub_snapshot

WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "cat",
    "dog",
    "on",
    "mat",
    "two",
    "big",
    "red",
    "car",
    "running",
    "fast",
    "##s",
    "##ing",
    "##ed",
]
SPECIAL = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "!"]
#: plain, messy whitespace, unknown word, truncated ([CLS] + 30 words + [SEP], then 0), empty
TEXTS = ["A photo of the cat!", "  two big   red cars running fast on the mat, dogs. ", "zebra",
         "a " * 40, ""]  # fmt: skip


def _bert_dir(directory: Path, config: dict | None = None) -> Path:
    """A ``bert-base-uncased``-shaped tokenizer (WordPiece, lower-casing BERT normaliser,
    ``[CLS] $A [SEP]``) with a small vocabulary; ``config``: its tokenizer_config.json."""
    ids = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )  # fmt: skip
    tok.decoder = decoders.WordPiece()
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "vocab.txt").write_text("\n".join(ids) + "\n")
    config = config if config is not None else {"tokenizer_class": "BertTokenizer"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def _open_clip_ids(directory: Path) -> torch.Tensor:
    ref = open_clip.tokenizer.HFTokenizer(str(directory), context_length=32, strip_sep_token=True)
    return ref(TEXTS)


def test_strip_sep_ids_equal_open_clips(tmp_path):
    directory = _bert_dir(tmp_path / "bert")
    want = _open_clip_ids(directory)
    assert (want == 0).any() and not (want == SPECIAL.index("[SEP]")).any()
    ours = HFTokenizer(directory / "tokenizer.json", context_length=32, strip_sep_token=True)
    assert torch.equal(ours(TEXTS), want)
    kept = HFTokenizer(directory / "tokenizer.json", context_length=32)(TEXTS)
    assert (kept == SPECIAL.index("[SEP]")).sum() == len(TEXTS)  # without the option: kept


def test_saved_tokenizer_keeps_the_option(tmp_path):
    directory = _bert_dir(tmp_path / "bert")
    ours = HFTokenizer(directory / "tokenizer.json", context_length=32, strip_sep_token=True)
    spec = ours.save(tmp_path / "saved")
    assert spec["strip_sep_token"] is True
    want = _open_clip_ids(directory)
    assert torch.equal(load_tokenizer(spec, tmp_path / "saved")(TEXTS), want)
    assert torch.equal(tokenizer_from_dir(tmp_path / "saved", 32)(TEXTS), want)


def test_missing_separator_is_a_usage_error(tmp_path):
    directory = _bert_dir(tmp_path / "bert", {"sep_token": "[END]"})
    with pytest.raises(UsageError, match="'\\[END\\]' is not in the vocabulary"):
        HFTokenizer(directory / "tokenizer.json", strip_sep_token=True)


def test_clipa_architecture_tokenizes_as_open_clip(tmp_path, monkeypatch):
    """Created by name, a CLIPA model fetches bert-base-uncased (here: a cached snapshot laid
    out as the hub repo is, whose tokenizer_config.json names no class or pad token)."""
    assert get_tokenizer_source("ViT-L-14-CLIPA") == {
        "kind": "hf", "hub_id": "bert-base-uncased", "strip_sep_token": True,
    }  # fmt: skip
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = fake_hub_snapshot(tmp_path / "hub", "bert-base-uncased")
    _bert_dir(snapshot, {"do_lower_case": True, "model_max_length": 512})
    (snapshot / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with torch.device("meta"):
        model = clipforge.create_model("ViT-L-14-CLIPA", towers="text")
    assert torch.equal(model.tokenize(TEXTS), _open_clip_ids(snapshot))
