"""clipforge's native HF text towers reproduce open_clip's ``HFTextEncoder`` models (≤ 1e-5,
fp32, perturbed random weights): XLM-R, RoBERTa, mT5 and NLLB-200 (M2M100) text towers with
their poolers and projections, inside open_clip's ``CustomTextCLIP``, every layer included.

open_clip builds these towers from a hub name (``AutoConfig.from_pretrained``), which this
machine cannot fetch: the tests hand it a reduced config of the same transformers class
(the hub models' real values are in ``clipforge.configs.hf_text.HF_MODELS`` and are checked
in ``tests/models/test_hf_text_architectures.py``).
"""

from __future__ import annotations

import json
import shutil

import open_clip
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import clipforge
from clipforge.checkpoints.formats import hf_text_keys
from clipforge.configs.hf_text import HF_MODELS

from ..conftest import max_diff, perturb_, sample_images
from ..tokenizer.test_hf_tokenizer import checkpoints  # noqa: F401  (fixture)

TOL = 1e-5
SIZES = dict(vocab=1000, width=64, heads=4, layers=2, ffn=96)


def hf_config(kind: str) -> transformers.PretrainedConfig:
    """A reduced transformers config of the class a hub model of ``kind`` has."""
    v, w, h, n, f = SIZES.values()
    if kind == "roberta":
        return transformers.XLMRobertaConfig(
            vocab_size=v, hidden_size=w, num_attention_heads=h, num_hidden_layers=n,
            intermediate_size=f, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
            layer_norm_eps=1e-5,  # the hub value (the class default is 1e-12)
        )  # fmt: skip
    if kind == "t5_encoder":  # mT5: gated-GELU (tanh), d_kv * heads == d_model
        return transformers.MT5Config(
            vocab_size=v, d_model=w, d_kv=w // h, num_heads=h, num_layers=n, d_ff=f,
            num_decoder_layers=1,
        )  # fmt: skip
    return transformers.M2M100Config(  # NLLB-200: scaled embeddings, ReLU, pre-LN
        vocab_size=v, d_model=w, encoder_attention_heads=h, encoder_layers=n,
        encoder_ffn_dim=f, decoder_layers=1, decoder_attention_heads=h, decoder_ffn_dim=f,
        max_position_embeddings=1024, scale_embedding=True, pad_token_id=1,
    )  # fmt: skip


#: reduced variants: (hub model it shrinks, open_clip pooler, open_clip projection, embed_dim)
VARIANTS = {
    "xlm-roberta-mean-mlp": ("xlm-roberta-base", "mean_pooler", "mlp", 32),
    "roberta-cls-linear": ("roberta-base", "cls_pooler", "linear", 32),
    "xlm-roberta-cls-hidden": ("xlm-roberta-large", "cls_last_hidden_state_pooler", None, 64),
    "mt5-mean-mlp": ("google/mt5-base", "mean_pooler", "mlp", 32),
    "nllb-cls-linear": ("facebook/nllb-200-distilled-600M", "cls_pooler", "linear", 32),
}
TINY_NAME = "tiny/{}"  # the hub name the reduced twin is registered under


@pytest.fixture
def tiny_hub(monkeypatch):
    """``AutoConfig.from_pretrained(name)`` answers a reduced config, and clipforge knows the
    reduced twins under ``tiny/<hub name>`` (as it knows the real hub models)."""

    original = transformers.AutoConfig.from_pretrained

    def from_pretrained(name, *args, **kwargs):
        if str(name).startswith("tiny/"):
            return hf_config(HF_MODELS[str(name).removeprefix("tiny/")][0])
        return original(name, *args, **kwargs)  # a local directory

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    v, w, h, n, f = SIZES.values()
    for name, (kind, _) in list(HF_MODELS.items()):
        fields = dict(vocab_size=v, width=w, heads=h, layers=n, intermediate_size=f)
        if kind == "t5_encoder":
            fields["head_dim"] = w // h
        monkeypatch.setitem(HF_MODELS, TINY_NAME.format(name), (kind, fields))


def model_cfg(variant: str) -> dict:
    """open_clip's ``model_cfg`` of a reduced variant (a 2-layer ViT image tower)."""
    hub, pooler, proj, embed_dim = VARIANTS[variant]
    text = {"hf_model_name": TINY_NAME.format(hub), "hf_tokenizer_name": TINY_NAME.format(hub),
            "hf_pooler_type": pooler, "hf_proj_type": proj, "hf_model_pretrained": False}  # fmt: skip
    vision = {"image_size": 32, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32}
    return {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text}


def reference(variant: str) -> torch.nn.Module:
    cfg = model_cfg(variant)
    torch.manual_seed(0)
    ref = open_clip.model.CustomTextCLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
    return perturb_(ref).eval()


def tokens_for(variant: str) -> torch.Tensor:
    """Ids as the tokenizers make them: a start token (``<s>``, or NLLB's language code),
    words, ``</s>``, then padding; rows of several lengths, one without padding."""
    text = hf_text_keys.text_to_native(model_cfg(variant)["text_cfg"])
    gen = torch.Generator().manual_seed(5)
    tokens = torch.full((4, 20), text.pad_token_id, dtype=torch.long)
    for row, n in enumerate((1, 6, 13, 18)):
        tokens[row, 0] = 0 if text.type == "roberta" else 7
        tokens[row, 1 : n + 1] = torch.randint(3, SIZES["vocab"], (n,), generator=gen)
        tokens[row, n + 1] = 2
    return tokens


def layer_outputs(ref: torch.nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each transformers layer's output for ``tokens`` (forward hooks on the text tower)."""
    hf = ref.text.transformer
    layers = getattr(getattr(hf, "encoder", hf), "layer", None) or getattr(hf, "block", None)
    layers = layers if layers is not None else hf.layers
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
             for m in layers]  # fmt: skip
    with torch.no_grad():
        ref.encode_text(tokens)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parity
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_reduced_hf_text_matches_open_clip(variant, tiny_hub):
    ref = reference(variant)
    state = ref.state_dict()
    assert hf_text_keys.matches(state)
    config = hf_text_keys.config_to_native(model_cfg(variant))
    model = clipforge.create_model(config).eval()
    model.load_state_dict(hf_text_keys.to_native(state))
    tokens, images = tokens_for(variant), sample_images(32)
    with torch.no_grad():
        text, want_text = model.encode_text(tokens), ref.encode_text(tokens)
        diffs = {
            "image": max_diff(model.encode_image(images), ref.encode_image(images)),
            "text": max_diff(text, want_text),
            "logit_scale": abs(model.logit_scale.item() - ref.logit_scale.item()),
        }
        inter = model.forward_intermediates(text=tokens, normalize=False)
    assert max(diffs.values()) <= TOL, diffs
    assert want_text.abs().max() > 1e-2  # the features are not trivially small
    layers = layer_outputs(ref, tokens)
    assert len(layers) == len(inter["text_intermediates"]) == SIZES["layers"]
    for i, (ours, theirs) in enumerate(zip(inter["text_intermediates"], layers, strict=True)):
        assert max_diff(ours, theirs) <= TOL, f"layer {i}"
    assert max_diff(inter["text_features"], want_text) <= TOL
    assert model.num_parameters()["total"] == sum(p.numel() for p in ref.parameters())
    back = hf_text_keys.from_native(model.state_dict())
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    ref.load_state_dict(back)  # strict: every key and shape is open_clip's


@pytest.mark.parity
def test_padding_does_not_change_features(tiny_hub):
    """Padding is masked (keys and pooling), so more of it changes nothing, in every family."""
    for variant in ("xlm-roberta-mean-mlp", "mt5-mean-mlp", "nllb-cls-linear"):
        config = hf_text_keys.config_to_native(model_cfg(variant))
        model = perturb_(clipforge.create_model(config)).eval()
        tokens = tokens_for(variant)
        longer = torch.cat([tokens, torch.full_like(tokens, config.text.pad_token_id)], dim=1)
        with torch.no_grad():
            assert max_diff(model.encode_text(tokens), model.encode_text(longer)) <= TOL, variant


@pytest.mark.parity
def test_open_clip_directory_loads_and_saves_back(tiny_hub, tmp_path, checkpoints):  # noqa: F811
    """An open_clip hub directory of an NLLB model loads through ``clipforge.load`` (the
    ``hf_text`` family of the open_clip format) and ``save(format="open_clip")`` writes the
    same config and tensors back."""
    ref, cfg = reference("nllb-cls-linear"), model_cfg("nllb-cls-linear")
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    state = ref.state_dict()
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(hub / "open_clip_model.safetensors")
    )
    for name in ("tokenizer.json", "tokenizer_config.json"):  # open_clip's local-dir reads them
        shutil.copy(checkpoints["nllb"] / name, hub / name)
    model = clipforge.load(hub)
    captions = ["a dog", "un chien", "собака"]
    assert torch.equal(
        model.tokenize(captions), open_clip.get_tokenizer(f"local-dir:{hub}")(captions)
    )
    tokens = tokens_for("nllb-cls-linear")
    with torch.no_grad():
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    saved = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]
    assert saved["text_cfg"] == {
        k: v for k, v in cfg["text_cfg"].items() if k != "hf_model_pretrained"
    }
    back = load_file(str(out / "open_clip_model.safetensors"))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    again = clipforge.load(model.config, weights=out / "open_clip_model.safetensors")
    with torch.no_grad():  # a bare open_clip state dict is recognised by its keys
        assert torch.equal(again.encode_text(tokens), model.encode_text(tokens))
