"""SigLIP's SentencePiece tokenization equals open_clip's (transformers' fast tokenizer behind
``clean="canonicalize"``, padded to the context) on 10,000 varied strings, with a Unigram
tokenizer trained here on the shared Flickr captions in T5/SigLIP's layout."""

from __future__ import annotations

import json
import random
import shutil
import tarfile

import pytest
import torch
from open_clip.tokenizer import HFTokenizer
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram
from tokenizers.trainers import UnigramTrainer

from clipforge.tokenizer.sentencepiece import SentencePieceTokenizer, canonicalize

from ..conftest import shared_path

CONTEXT = 64


@pytest.fixture(scope="module")
def captions() -> list[str]:
    with tarfile.open(shared_path("data", "flickr8k-1k.tar.gz")) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("captions.tsv"))
        lines = tar.extractfile(member).read().decode("utf-8").splitlines()
    rows = [line.split("\t", 1)[1] for line in lines if "\t" in line]
    assert len(rows) >= 900
    return rows


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, captions):
    """tokenizer.json + tokenizer_config.json as SigLIP's hub directories hold them."""
    tok = Tokenizer(Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = UnigramTrainer(vocab_size=600, special_tokens=["<pad>", "</s>", "<unk>"],
                             unk_token="<unk>")  # fmt: skip
    tok.train_from_iterator([canonicalize(c) for c in captions], trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", eos)]
    )
    out = tmp_path_factory.mktemp("siglip-tokenizer")
    tok.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "</s>",
              "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": CONTEXT}  # fmt: skip
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


def _varied(captions: list[str], n: int = 10_000) -> list[str]:
    """Captions and mutations: case, punctuation, underscores, HTML entities, accents,
    extra whitespace, repeats past the context, empty strings."""
    rng = random.Random(0)
    extras = ["!", "?", "...", ",", "'s", " -- ", "_", "&amp;", "&quot;", "é", "naïve",
              "  ", "\t", "😀", "(x)", "#1", "A/B", "ÉCOLE", "straße"]  # fmt: skip
    texts = ["", " ", "!!!", "a", "A photo of a {}."]
    while len(texts) < n:
        words = rng.choice(captions).split()
        for _ in range(rng.randint(0, 4)):
            words.insert(rng.randint(0, len(words)), rng.choice(extras))
        text = " ".join(words)
        mode = rng.random()
        text = text.upper() if mode < 0.1 else text.title() if mode < 0.2 else text
        texts.append(text * (rng.randint(3, 8) if rng.random() < 0.05 else 1))
    return texts


@pytest.mark.slow
@pytest.mark.parity
def test_ids_equal_open_clip_on_10000_strings(checkpoint_dir, captions):
    ours = SentencePieceTokenizer.from_dir(checkpoint_dir, CONTEXT)
    reference = HFTokenizer(str(checkpoint_dir), context_length=CONTEXT, clean="canonicalize")
    texts = _varied(captions)
    for start in range(0, len(texts), 1000):
        batch = texts[start : start + 1000]
        expected = reference(batch)
        got = ours(batch)
        assert got.dtype == torch.long and got.shape == (len(batch), CONTEXT)
        mismatch = (got != expected).any(dim=1).nonzero()
        assert len(mismatch) == 0, batch[int(mismatch[0])]


def test_padding_and_canonicalisation_are_pinned(checkpoint_dir):
    tok = SentencePieceTokenizer.from_dir(checkpoint_dir, CONTEXT)
    eos = tok.backend.token_to_id("</s>")
    assert tok.pad_id == eos  # SigLIP pads with </s>, read from tokenizer_config.json
    assert canonicalize("A Dog's_ball!! &amp;  RUNS") == "a dogs ball runs"
    plain, shouted = tok(["a dog runs on the grass", "A DOG, runs on the_grass!!"])
    assert torch.equal(plain, shouted)
    n = int((plain != eos).sum())
    assert n > 0 and torch.all(plain[n:] == eos)  # text, its </s>, then </s> padding
    long = tok(["a dog " * 100])[0]
    assert long.shape == (CONTEXT,) and long[-1] == eos and (long[:-1] != eos).all()
    with pytest.raises(ValueError, match="longer than the context"):
        tok(["a dog " * 100], truncate=False)
    assert tok(["a dog"], context_length=8).shape == (1, 8)


def test_a_siglip_model_tokenizes_with_its_checkpoints_tokenizer(checkpoint_dir):
    import clipforge
    from clipforge.configs import ClipConfig

    config = ClipConfig.from_dict({
        "embed_dim": 32, "norm_eps": 1e-6, "init_logit_bias": -10.0,
        "vision": {"type": "siglip_vit", "image_size": 32, "patch_size": 8, "width": 32,
                   "layers": 1, "heads": 2},
        "text": {"type": "siglip_text", "context_length": CONTEXT, "vocab_size": 600,
                 "width": 32, "heads": 2, "layers": 1},
    })  # fmt: skip
    model = clipforge.create_model(config).eval()
    tokenizer = SentencePieceTokenizer.from_dir(checkpoint_dir, CONTEXT)
    model.set_tokenizer(tokenizer)
    tokens = model.tokenize(["A dog runs!", "a dog runs"])
    assert torch.equal(tokens[0], tokens[1]) and tokens.shape == (2, CONTEXT)
    assert model.encode_text(tokens).shape == (2, 32)


def test_padding_side_survives_save_and_load(checkpoint_dir, tmp_path):
    """A left-padding (Gemma-style) config is written back by save(), so reloading pads left."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(checkpoint_dir / "tokenizer.json", source / "tokenizer.json")
    (source / "tokenizer_config.json").write_text('{"pad_token": "</s>", "padding_side": "left"}')
    left = SentencePieceTokenizer.from_dir(source, 16)
    assert left.padding_side == "left"
    left.save(tmp_path / "saved")
    again = SentencePieceTokenizer.from_dir(tmp_path / "saved", 16)
    assert again.padding_side == "left"
    assert torch.equal(again(["a dog"]), left(["a dog"]))
    assert again(["a dog"])[0, 0].item() == again.pad_id  # padding comes first
