"""SigLIP and SigLIP 2 tokenization against transformers' own tokenizers (and open_clip's for
SigLIP 2) on 10,000 varied strings, with tokenizer files built here from the shared Flickr
captions: a SentencePiece Unigram model for the SigLIP kind (``spiece.model`` read by
transformers' ``SiglipTokenizer``, ``tokenizer.json`` converted from it by transformers'
``SpmConverter``), and a SentencePiece BPE model with byte fallback for the Gemma kind
(SigLIP 2), turned into ``tokenizer.json`` by transformers' ``GemmaTokenizer``.

Which canonicalisation clipforge applies, and why: every SigLIP and SigLIP 2 checkpoint gets
big_vision's (the text the checkpoints were trained on), which is open_clip's
``HFTokenizer(clean="canonicalize")`` — the ``tokenizer_kwargs`` of open_clip's
``ViT-*-SigLIP*`` and ``ViT-*-SigLIP2*`` configs. transformers differs on both kinds:
``SiglipTokenizer`` lower-cases and strips punctuation but skips ftfy and HTML unescaping and
deletes ``_`` where big_vision turns it into a space; ``GemmaTokenizer`` does no
canonicalisation at all. So on the Gemma kind clipforge equals open_clip on raw text and
transformers on canonicalised text; on the SigLIP kind it equals transformers wherever the two
canonicalisations agree, and transformers given big_vision's canonical text everywhere.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
import transformers
from open_clip.tokenizer import HFTokenizer
from tokenizers import processors

from clipforge.checkpoints.formats.siglip_keys import read_tokenizer
from clipforge.tokenizer.sentencepiece import SentencePieceTokenizer, canonicalize

from ..conftest import shared_path

CONTEXT = 64
_EXTRAS = [
    "!", "?", "...", ",", "'s", " -- ", "_", "x_y", "&amp;", "&quot;", "&lt;3", "é", "naïve",
    "  ", "\t", "\n", "\u00a0", "😀", "👍🏽", "🐕‍🦺", "(x)", "#1", "A/B", "ÉCOLE", "straße",
    "Ω", "日本語", "ﬁsh", "２０", "“q”", "…", "3.14", "1,000", "2024-01-31", "42%", "$5",
    "e-mail", "C++", "don't", "İstanbul", "ǅ", "\u200b", "Ⅻ", "½", "ｈｅｌｌｏ", "μm",
]  # fmt: skip


def _captions() -> list[str]:
    with tarfile.open(shared_path("data", "flickr8k-1k.tar.gz")) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("captions.tsv"))
        lines = tar.extractfile(member).read().decode("utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in lines if "\t" in line]


@pytest.fixture(scope="module")
def captions() -> list[str]:
    rows = _captions()
    assert len(rows) >= 900
    return rows


@pytest.fixture(scope="module")
def texts(captions) -> list[str]:
    """10,000 strings: captions and mutations — punctuation, digits, unicode, emoji,
    HTML entities, odd whitespace, case, random character soup, and long repeats that
    get truncated."""
    rng = random.Random(0)
    out = ["", " ", "!!!", "a", "A photo of a {}.", "😀" * 80, "_" * 10]
    while len(out) < 10_000:
        words = rng.choice(captions).split()
        for _ in range(rng.randint(0, 5)):
            words.insert(rng.randint(0, len(words)), rng.choice(_EXTRAS))
        text, mode = " ".join(words), rng.random()
        if mode < 0.1:
            text = text.upper()
        elif mode < 0.2:
            text = text.title()
        elif mode < 0.25:
            text = "".join(rng.choice(_EXTRAS + list("aZ9 .")) for _ in range(rng.randint(1, 30)))
        out.append(text * (rng.randint(3, 8) if rng.random() < 0.05 else 1))
    return out


def _train(captions: list[str], **options) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions), model_writer=model, minloglevel=2, **options
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory, captions) -> Path:
    """A SigLIP checkpoint's tokenizer files: spiece.model, tokenizer.json (`$A </s>`) and
    tokenizer_config.json padding with ``</s>``."""
    from transformers.convert_slow_tokenizer import SpmConverter

    out = tmp_path_factory.mktemp("siglip")
    spiece = _train(
        [canonicalize(c) for c in captions], vocab_size=600, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
    )  # fmt: skip
    (out / "spiece.model").write_bytes(spiece)
    backend = SpmConverter(transformers.SiglipTokenizer(vocab_file=str(out / "spiece.model")))
    tokenizer = backend.converted()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    tokenizer.save(str(out / "tokenizer.json"))
    config = {"pad_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>",
              "model_max_length": CONTEXT, "do_lower_case": True}  # fmt: skip
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


def _gemma_config(**overrides) -> dict:
    """SigLIP 2's tokenizer_config.json (google/siglip2-*): Gemma's tokenizer, no <bos>,
    <eos> after the text, padded with <pad>."""
    config = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": False,
              "add_eos_token": True, "bos_token": "<bos>", "eos_token": "<eos>",
              "pad_token": "<pad>", "unk_token": "<unk>", "padding_side": "right",
              "model_max_length": CONTEXT}  # fmt: skip
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


@pytest.fixture(scope="module")
def gemma_json(tmp_path_factory, captions) -> str:
    """Gemma's tokenizer.json layout (BPE, byte fallback, `▁` normaliser) with SigLIP 2's
    `$A <eos>` template, made by transformers' GemmaTokenizer from a SentencePiece BPE model."""
    spm_dir = tmp_path_factory.mktemp("gemma-spm")
    (spm_dir / "tokenizer.model").write_bytes(_train(
        captions, vocab_size=800, model_type="bpe", byte_fallback=True, split_digits=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
    ))  # fmt: skip
    backend = transformers.GemmaTokenizer.from_pretrained(str(spm_dir)).backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(  # SigLIP 2's: text, <eos>
        single="$A <eos>", special_tokens=[("<eos>", backend.token_to_id("<eos>"))]
    )
    return backend.to_str()


def _gemma_dir(root: Path, tokenizer_json: str, **overrides) -> Path:
    root.mkdir()
    (root / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    (root / "tokenizer_config.json").write_text(json.dumps(_gemma_config(**overrides)))
    return root


def _equal_rows(got: torch.Tensor, expected) -> None:
    expected = torch.as_tensor(expected)
    assert got.dtype == torch.long and got.shape == expected.shape
    mismatch = (got != expected).any(dim=1).nonzero()
    assert len(mismatch) == 0, f"row {int(mismatch[0])} differs"


@pytest.mark.slow
@pytest.mark.parity
def test_siglip_ids_equal_transformers_siglip_tokenizer(siglip_dir, texts):
    ours = read_tokenizer(siglip_dir)  # as a SigLIP checkpoint directory is loaded
    reference = transformers.SiglipTokenizer(vocab_file=str(siglip_dir / "spiece.model"))
    hf_clean = [reference.canonicalize_text(t) for t in texts]
    agree = [i for i, t in enumerate(texts) if hf_clean[i] == canonicalize(t)]
    assert len(texts) // 2 < len(agree) < len(texts)  # both cases well represented
    got = ours(texts)
    pad = dict(padding="max_length", max_length=CONTEXT, truncation=True)
    _equal_rows(got[agree], reference([texts[i] for i in agree], **pad).input_ids)
    # where transformers' canonicalisation differs, clipforge is transformers on big_vision's
    _equal_rows(got, reference([canonicalize(t) for t in texts], **pad).input_ids)
    hf_layout = _spiece_only(siglip_dir, siglip_dir.parent / "siglip-hf")
    _equal_rows(read_tokenizer(hf_layout)(texts), got)  # spiece.model alone: the same ids
    assert ours.pad_id == reference.eos_token_id and (got[:, -1] == ours.pad_id).all()
    assert (got[:, -2] != ours.pad_id).any()  # long strings were truncated, </s> kept last


def _spiece_only(siglip_dir: Path, out: Path) -> Path:
    """The tokenizer files of a Hugging Face SigLIP directory: spiece.model, no tokenizer.json."""
    out.mkdir(exist_ok=True)
    for name in ("spiece.model", "tokenizer_config.json"):
        (out / name).write_bytes((siglip_dir / name).read_bytes())
    return out


def test_a_transformers_siglip_directory_tokenizes_with_its_spiece_model(tmp_path, siglip_dir):
    """``SiglipModel.save_pretrained`` + spiece.model → ``clipforge.load`` → ``tokenize``:
    no tokenizer.json, no user step; transformers' ids on big_vision's canonical text."""
    import clipforge

    text_cfg = dict(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, max_position_embeddings=CONTEXT)  # fmt: skip
    vision_cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, image_size=32, patch_size=16)  # fmt: skip
    config = transformers.SiglipConfig(text_config=text_cfg, vision_config=vision_cfg)
    transformers.SiglipModel(config).save_pretrained(tmp_path / "hf")
    model = clipforge.load(str(_spiece_only(siglip_dir, tmp_path / "hf")))
    texts = ["A dog_runs &amp; jumps!", "“Two” CATS", "a photo of a bird " * 20]
    reference = transformers.SiglipTokenizer(vocab_file=str(siglip_dir / "spiece.model"))
    expected = reference([canonicalize(t) for t in texts], padding="max_length",
                         max_length=CONTEXT, truncation=True).input_ids  # fmt: skip
    _equal_rows(model.tokenize(texts), expected)


def test_siglip_canonicalisation_differences_are_pinned(siglip_dir):
    reference = transformers.SiglipTokenizer(vocab_file=str(siglip_dir / "spiece.model"))
    for raw, big_vision, hf in [
        ("a dog_ball", "a dog ball", "a dogball"),  # `_` → space first in big_vision
        ("cats &amp; dogs", "cats dogs", "cats amp dogs"),  # HTML unescaped first
        ("“quoted”", "quoted", "“quoted”"),  # ftfy straightens curly quotes
    ]:
        assert canonicalize(raw) == big_vision and reference.canonicalize_text(raw) == hf


@pytest.mark.slow
@pytest.mark.parity
def test_gemma_ids_equal_open_clip_and_transformers(tmp_path, gemma_json, texts):
    directory = _gemma_dir(tmp_path / "siglip2", gemma_json)
    ours = read_tokenizer(directory)  # as a SigLIP 2 checkpoint directory is loaded
    got = ours(texts)
    open_clip = HFTokenizer(str(directory), context_length=CONTEXT, clean="canonicalize")
    _equal_rows(got, open_clip(texts))
    gemma = transformers.GemmaTokenizerFast.from_pretrained(str(directory))
    clean = [canonicalize(t) for t in texts]
    pad = dict(padding="max_length", max_length=CONTEXT, truncation=True)
    _equal_rows(got, gemma(clean, **pad).input_ids)
    raw = SentencePieceTokenizer(directory / "tokenizer.json", CONTEXT, clean="none")
    _equal_rows(raw(texts), gemma(texts, **pad).input_ids)  # same BPE on uncleaned text
    vocab = ours.backend.get_vocab()
    byte_ids = torch.tensor([i for t, i in vocab.items() if t.startswith("<0x")])
    assert torch.isin(got, byte_ids).any()  # byte fallback was exercised
    assert ours.pad_id == vocab["<pad>"] == 0 and (got == 0).any()
    assert not (got == vocab["<bos>"]).any()
    full = got[:, -1] != 0
    assert full.any() and (got[full, -1] == vocab["<eos>"]).all()  # truncated, <eos> kept


def test_gemma_template_and_padding_side_follow_transformers(tmp_path, gemma_json):
    """As transformers ≥ 5 (and so open_clip) loads a directory with tokenizer.json: the
    file's template is kept whatever add_bos/eos_token say; padding_side comes from the
    config, absent it is the tokenizer class's default (left for Gemma)."""
    cases = {
        "siglip2": {},
        "flags-ignored": {"add_bos_token": True, "add_eos_token": False},
        "class-default-side": {"padding_side": None},
        "plain-class": {"padding_side": None, "tokenizer_class": "PreTrainedTokenizerFast"},
    }
    rows = {}
    for name, overrides in cases.items():
        directory = _gemma_dir(tmp_path / name, gemma_json, **overrides)
        reference = transformers.AutoTokenizer.from_pretrained(str(directory))
        expected = reference(["a dog runs"], padding="max_length", max_length=8, truncation=True)
        rows[name] = read_tokenizer(directory)(["A dog, runs!"], context_length=8)[0].tolist()
        _equal_rows(torch.tensor([rows[name]]), expected.input_ids)
    backend = read_tokenizer(tmp_path / "siglip2").backend
    words = backend.encode("a dog runs", add_special_tokens=False).ids
    body, pads = [*words, 1], [0] * (8 - len(words) - 1)  # <eos> = 1, <pad> = 0
    assert rows["siglip2"] == rows["flags-ignored"] == rows["plain-class"] == body + pads
    assert rows["class-default-side"] == pads + body


def test_a_spiece_model_without_its_converter_warns_and_loads_no_tokenizer(
    tmp_path, siglip_dir, monkeypatch
):
    """Without transformers/sentencepiece the weights still load; tokenize asks instead."""
    from clipforge.tokenizer import sentencepiece

    def missing(path):
        raise ImportError(f"reading {path} needs transformers, sentencepiece and protobuf")

    monkeypatch.setattr(sentencepiece, "spiece_to_backend", missing)
    with pytest.warns(UserWarning, match="needs transformers"):
        assert read_tokenizer(_spiece_only(siglip_dir, tmp_path / "hf")) is None
    assert read_tokenizer(siglip_dir) is not None  # tokenizer.json needs no converter
