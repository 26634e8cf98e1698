"""Tiny SigLIP (with a SentencePiece ``tokenizer.json`` trained here) and EVA-02 models for
the tests of using every family: ONNX, training, LoRA and the CLI."""

from __future__ import annotations

import functools
import json
import tarfile
from pathlib import Path

import torch

import clipforge
from clipforge.configs import ClipConfig
from clipforge.tokenizer.sentencepiece import SentencePieceTokenizer, canonicalize

from .conftest import perturb_, shared_path

SIGLIP_CONTEXT = 64  # SigLIP's context: the tokenizer pads every text to it
SIGLIP_VOCAB = 400
#: SigLIP 2's layout (GELU-tanh text MLPs, biased text projection), reduced
TINY_SIGLIP = {
    "embed_dim": 32, "norm_eps": 1e-6, "init_logit_bias": -10.0,
    "init_logit_scale": 2.302585092994046,
    "vision": {"type": "siglip_vit", "image_size": 32, "patch_size": 8, "width": 32,
               "layers": 2, "heads": 2},
    "text": {"type": "siglip_text", "context_length": SIGLIP_CONTEXT,
             "vocab_size": SIGLIP_VOCAB, "width": 32, "heads": 2, "layers": 2,
             "activation": "gelu_tanh"},
}  # fmt: skip
#: the i18n / SO400M variant: GELU-tanh image MLPs, exact-GELU text, no text projection
TINY_SIGLIP_NO_PROJ = {
    **TINY_SIGLIP,
    "vision": {**TINY_SIGLIP["vision"], "activation": "gelu_tanh"},
    "text": {**TINY_SIGLIP["text"], "activation": None, "proj": "none"},
}
#: EVA-02's switches (2-D RoPE, SwiGLU, sub-LNs) on a reduced tower, CLIP's text tower
TINY_EVA = {
    "embed_dim": 24,
    "vision": {"type": "eva", "image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
               "heads": 4, "mlp_ratio": 8 / 3, "swiglu": True, "mlp_norm": True,
               "attn_norm": True, "rope": True, "rope_ref_grid": 4},
    "text": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}  # fmt: skip


@functools.cache
def flickr_captions() -> tuple[str, ...]:
    """The shared Flickr captions (about 1,000)."""
    with tarfile.open(shared_path("data", "flickr8k-1k.tar.gz")) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("captions.tsv"))
        lines = tar.extractfile(member).read().decode("utf-8").splitlines()
    return tuple(line.split("\t", 1)[1] for line in lines if "\t" in line)


@functools.cache
def _tokenizer_json() -> str:
    """A Unigram tokenizer in T5/SigLIP's layout, trained on the captions (cached)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer

    tok = Tokenizer(Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = UnigramTrainer(vocab_size=SIGLIP_VOCAB, unk_token="<unk>",
                             special_tokens=["<pad>", "</s>", "<unk>"])  # fmt: skip
    tok.train_from_iterator([canonicalize(c) for c in flickr_captions()], trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", eos)]
    )
    return tok.to_str()


def write_siglip_tokenizer(directory: Path) -> Path:
    """``tokenizer.json`` + ``tokenizer_config.json`` (pad ``</s>``) as SigLIP hub dirs hold them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(_tokenizer_json(), encoding="utf-8")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "</s>",
              "eos_token": "</s>", "unk_token": "<unk>"}  # fmt: skip
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


def tiny_siglip(tokenizer_dir: Path, config: dict | None = None) -> clipforge.CLIP:
    """A seeded, perturbed tiny SigLIP model (``TINY_SIGLIP`` unless ``config``) using the
    tokenizer written in ``tokenizer_dir``."""
    torch.manual_seed(0)
    cfg = ClipConfig.from_dict(config or TINY_SIGLIP)
    model = perturb_(clipforge.create_model(cfg)).eval()
    write_siglip_tokenizer(tokenizer_dir)
    model.set_tokenizer(SentencePieceTokenizer.from_dir(tokenizer_dir, SIGLIP_CONTEXT))
    return model


def tiny_eva() -> clipforge.CLIP:
    """A seeded, perturbed tiny EVA-02 model (RoPE, SwiGLU, sub-LNs; CLIP's tokenizer)."""
    torch.manual_seed(0)
    return perturb_(clipforge.create_model(ClipConfig.from_dict(TINY_EVA))).eval()
