"""The native HF text towers (RoBERTa / XLM-R, mT5, NLLB) implement the whole Tower protocol:
LiT locking, LoRA adapters and merging, gradient checkpointing, ``forward_intermediates``'
options, the selfcheck, ONNX export, and saving/loading with their tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import clipforge
from clipforge.configs import ClipConfig
from clipforge.configs.registry import ARCHITECTURES
from clipforge.lora import apply_lora, merge_lora
from clipforge.selfcheck import check_architecture

from ..conftest import max_diff, perturb_
from ..tokenizer.test_hf_tokenizer import CAPTIONS, checkpoints  # noqa: F401  (fixture)

TYPES = ["roberta", "t5_encoder", "m2m100_encoder"]
TOL = 1e-5


def tiny(kind: str, **text) -> ClipConfig:
    """A tiny CLIP with an HF text tower of ``kind`` (16-token context)."""
    return ClipConfig.from_dict({
        "embed_dim": 32,
        "vision": {"type": "vit", "image_size": 32, "patch_size": 16, "width": 64, "layers": 1,
                   "heads": 2},
        "text": {"type": kind, "context_length": 16, "vocab_size": 300, "width": 64,
                 "heads": 4, "layers": 3, "intermediate_size": 96, **text},
    })  # fmt: skip


def tokens(config: ClipConfig) -> torch.Tensor:
    pad = config.text.pad_token_id
    ids = torch.randint(3, 300, (3, 16), generator=torch.Generator().manual_seed(2))
    ids[0, 4:], ids[1, 10:] = pad, pad
    return ids


def model_of(kind: str, **text) -> clipforge.CLIP:
    torch.manual_seed(0)
    return perturb_(clipforge.create_model(tiny(kind, **text))).eval()


@pytest.mark.parametrize("kind", TYPES)
def test_lit_unlocks_the_last_blocks_and_the_head(kind):
    model = model_of(kind, pooler="cls") if kind == "roberta" else model_of(kind)
    model.text.lock(unlocked_last_n=1)
    trainable = {n for n, p in model.text.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("transformer.resblocks.2.", "proj", "ln_final",
                                           "pooler")) for n in trainable)  # fmt: skip
    assert any(n.startswith("transformer.resblocks.2.") for n in trainable)
    assert any(n.startswith("proj") for n in trainable)
    assert not any(n.startswith("token_embedding") for n in trainable)


@pytest.mark.parametrize("kind", TYPES)
def test_lora_adapts_attention_and_mlp_and_merges_back(kind):
    model, ids = model_of(kind), tokens(tiny(kind))
    with torch.no_grad():
        before = model.encode_text(ids)
    apply_lora(model, rank=4, towers=("text",))
    with torch.no_grad():
        assert max_diff(model.encode_text(ids), before) <= TOL  # B = 0: no change yet
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_(std=0.05)
        adapted = model.encode_text(ids)
    assert max_diff(adapted, before) > 1e-3
    sites = [n for n, _ in model.named_parameters() if n.endswith("lora_A")]
    assert len(sites) == 3 * 4  # in_proj, out_proj, c_fc, c_proj in each of 3 blocks
    merge_lora(model)
    with torch.no_grad():
        assert max_diff(model.encode_text(ids), adapted) <= 1e-5


@pytest.mark.parametrize("kind", TYPES)
def test_checkpointing_gives_the_same_gradients(kind):
    ids = tokens(tiny(kind))
    grads = []
    for enable in (False, True):
        model = model_of(kind).train()
        model.set_grad_checkpointing(enable)
        model.encode_text(ids).square().sum().backward()
        grads.append(model.text.transformer.resblocks[0].attn.in_proj_weight.grad)
    assert max_diff(grads[0], grads[1]) <= 1e-6


@pytest.mark.parametrize("kind", TYPES)
def test_forward_intermediates_options(kind):
    model, ids = model_of(kind), tokens(tiny(kind))
    with torch.no_grad():
        full = model.forward_intermediates(text=ids, normalize=False)
        some = model.text.forward_intermediates(ids, indices=[0], stop_early=True)
        only = model.text.forward_intermediates(ids, indices=2, intermediates_only=True)
        feats = model.text.forward_features(ids)
    assert len(full["text_intermediates"]) == 3
    assert max_diff(full["text_features"], model.encode_text(ids)) <= TOL
    assert torch.equal(some["text_intermediates"][0], full["text_intermediates"][0])
    assert max_diff(model.text._final(full["text_intermediates"][-1]), feats) <= TOL
    assert set(only) == {"text_intermediates"} and len(only["text_intermediates"]) == 2


def test_poolers_and_projections():
    """``mean`` ignores padding; ``cls`` reads the first token (through RoBERTa's tanh
    pooler); ``none`` needs width == embed_dim; ``mlp`` holds a hidden layer."""
    model = model_of("roberta", pooler="cls")
    assert model.text.pooler is not None and isinstance(model.text.proj, torch.nn.Sequential)
    assert model_of("roberta", pooler="cls_last_hidden_state").text.pooler is None
    with pytest.raises(ValueError, match="text.proj must be set"):
        clipforge.create_model(tiny("m2m100_encoder", proj="none"))
    model = model_of("m2m100_encoder", proj="linear")
    ids = tokens(tiny("m2m100_encoder"))
    with torch.no_grad():
        first = model.text.proj(model.text.forward_features(ids)[:, 0])
        assert max_diff(model.encode_text(ids), first) <= TOL


def test_selfcheck_builds_and_runs_a_reduced_nllb(tmp_path, monkeypatch):
    """A reduced NLLB-CLIP through ``clipforge selfcheck``'s check (its hub tokenizer is not
    cached here: random ids, as for SigLIP)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = {"kind": "hf", "hub_id": "facebook/nllb-200-distilled-600M"}
    arch = {**tiny("m2m100_encoder").to_dict(), "tokenizer": source}
    name = clipforge.register_architecture(arch, name="selfcheck-nllb-tiny", replace=True)
    try:
        check = check_architecture(name)
    finally:  # other tests compare every registered architecture with open_clip's
        ARCHITECTURES.unregister(name)
    assert check.embed_dim == 32 and check.parameters["text"] > 0


FAMILY_TOKENIZER = {"roberta": "xlm-roberta", "t5_encoder": "mt5", "m2m100_encoder": "nllb"}


def with_tokenizer(kind: str, checkpoints, **text) -> clipforge.CLIP:  # noqa: F811
    """A tiny model of ``kind`` with its family's (small, locally trained) tokenizer."""
    from clipforge.tokenizer.hf import HFTokenizer

    torch.manual_seed(0)
    model = perturb_(clipforge.create_model(tiny(kind, vocab_size=1000, **text))).eval()
    model.set_tokenizer(HFTokenizer.from_dir(checkpoints[FAMILY_TOKENIZER[kind]], 16))
    return model


@pytest.mark.parametrize("kind", TYPES)
def test_onnx_export_equals_pytorch(kind, tmp_path, checkpoints):  # noqa: F811
    """The bundle carries the tokenizer; padding is fed, never trimmed; ≤ 1e-5."""
    from clipforge.onnx import OnnxClip, export_onnx

    model = with_tokenizer(kind, checkpoints)
    export_onnx(model, tmp_path / "onnx")
    runtime = OnnxClip(tmp_path / "onnx")
    assert np.array_equal(runtime.tokenize(CAPTIONS), model.tokenize(CAPTIONS).numpy())
    ids = model.tokenize(CAPTIONS)
    with torch.no_grad():
        want = model.encode_text(ids).numpy()
    assert np.abs(runtime.encode_text(ids.numpy()) - want).max() <= TOL
    assert runtime.text_input["pooling"] in ("mean", "cls")


def test_saved_models_load_with_their_tokenizer(tmp_path, checkpoints):  # noqa: F811
    """NLLB with a chosen language, saved in clipforge's layout, loads with it."""
    model = with_tokenizer("m2m100_encoder", checkpoints)
    model.get_tokenizer().set_language("ukr_Cyrl")
    out = clipforge.save(model, tmp_path / "saved", format="clipforge")
    back = clipforge.load(out)
    assert back.get_tokenizer().language == "ukr_Cyrl"
    assert torch.equal(back.tokenize(CAPTIONS), model.tokenize(CAPTIONS))
    with torch.no_grad():
        assert torch.equal(back.encode_text(back.tokenize(CAPTIONS)),
                           model.encode_text(model.tokenize(CAPTIONS)))  # fmt: skip
