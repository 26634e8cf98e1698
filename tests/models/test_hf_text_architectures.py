"""Every HF-text architecture (XLM-R, RoBERTa, mT5, NLLB-CLIP, NLLB-SigLIP) builds open_clip's
model: parameter counts per tower equal open_clip's (built on the meta device from the hub
models' configs, written here as transformers config classes: they cannot be fetched) and
open_clip's published profile; configs convert both ways."""

from __future__ import annotations

import csv

import open_clip
import pytest
import torch
import transformers

import clipforge
from clipforge.checkpoints.formats import hf_text_keys
from clipforge.configs import ClipConfig, ConfigError, get_config, list_architectures
from clipforge.configs.hf_text import HF_MODELS
from clipforge.configs.param_counts import count_parameters

from ..conftest import shared_path

HF_TEXT = ["xlm-roberta-base-ViT-B-32", "xlm-roberta-large-ViT-H-14", "roberta-ViT-B-32",
           "mt5-base-ViT-B-32", "mt5-xl-ViT-H-14", "nllb-clip-base", "nllb-clip-large",
           "nllb-clip-base-siglip", "nllb-clip-large-siglip"]  # fmt: skip
_ROBERTA = dict(max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_act="gelu")  # fmt: skip
_NLLB = dict(vocab_size=256206, d_model=1024, encoder_attention_heads=16,
             decoder_attention_heads=16, max_position_embeddings=1024, scale_embedding=True,
             activation_function="relu", pad_token_id=1)  # fmt: skip
#: the hub models' config.json values (huggingface.co/<name>/blob/main/config.json)
HUB_CONFIGS = {
    "xlm-roberta-base": lambda: transformers.XLMRobertaConfig(
        vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, **_ROBERTA),
    "xlm-roberta-large": lambda: transformers.XLMRobertaConfig(
        vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, **_ROBERTA),
    "roberta-base": lambda: transformers.RobertaConfig(
        vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, **_ROBERTA),
    "google/mt5-base": lambda: transformers.MT5Config(
        vocab_size=250112, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "google/mt5-xl": lambda: transformers.MT5Config(
        vocab_size=250112, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "facebook/nllb-200-distilled-600M": lambda: transformers.M2M100Config(
        encoder_layers=12, decoder_layers=12, encoder_ffn_dim=4096, decoder_ffn_dim=4096, **_NLLB),
    "facebook/nllb-200-distilled-1.3B": lambda: transformers.M2M100Config(
        encoder_layers=24, decoder_layers=24, encoder_ffn_dim=8192, decoder_ffn_dim=8192, **_NLLB),
}  # fmt: skip


@pytest.fixture
def hub_configs(monkeypatch):
    """open_clip's ``AutoConfig.from_pretrained(hub name)`` answers the hub model's config."""
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        lambda name, *a, **k: HUB_CONFIGS[name]())  # fmt: skip


def _profile() -> dict[str, dict[str, str]]:
    with shared_path("reference", "model_profile.csv").open() as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def test_every_hf_text_architecture_exists():
    assert set(HF_TEXT) <= set(list_architectures())
    assert set(HF_TEXT) <= set(open_clip.list_models())
    assert set(HUB_CONFIGS) == set(HF_MODELS)


@pytest.mark.parametrize("name", HF_TEXT)
def test_parameter_counts_equal_open_clip_and_the_profile(name, hub_configs):
    with torch.device("meta"):  # transformers too builds on meta inside this context
        ours = clipforge.create_model(name)
        ref = open_clip.create_model(name, device="meta", pretrained_hf=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    expected = {"image": count(ref.visual), "text": count(ref.text), "total": count(ref)}
    assert ours.num_parameters() == expected
    assert count_parameters(get_config(name)) == expected  # the formula, without building
    profile = _profile().get(name)
    if profile is not None:  # mt5-base-ViT-B-32 ... nllb-clip-large-siglip are all listed
        for key, column in (("image", "image_mparams"), ("text", "text_mparams"),
                            ("total", "mparams")):  # fmt: skip
            assert round(expected[key] / 1e6, 2) == float(profile[column]), key


@pytest.mark.parametrize("name", HF_TEXT)
def test_open_clip_model_cfg_converts_both_ways(name):
    theirs = open_clip.get_model_config(name)
    ours = get_config(name)
    assert hf_text_keys.config_to_native(theirs) == ours
    back = hf_text_keys.config_from_native(ours)
    assert hf_text_keys.config_to_native(back) == ours
    text = {"hf_proj_type": "mlp", "hf_pooler_type": "mean_pooler", **theirs["text_cfg"]}
    assert back["text_cfg"] == text
    for key, value in back["vision_cfg"].items():
        assert theirs["vision_cfg"].get(key, value) == value, key
    assert ClipConfig.from_dict(ours.to_dict()) == ours


def test_hub_values_equal_the_transformers_configs():
    """clipforge's table of hub models holds the values of each hub config."""
    for name, make in HUB_CONFIGS.items():
        hf = make()
        kind, fields = HF_MODELS[name]
        text = type(hf_text_keys.text_to_native({"hf_model_name": name}))
        assert text.type == kind
        native = text(**fields)
        if kind == "roberta":
            got = (hf.vocab_size, hf.hidden_size, hf.num_attention_heads, hf.num_hidden_layers,
                   hf.intermediate_size, hf.max_position_embeddings, hf.pad_token_id)  # fmt: skip
            want = (native.vocab_size, native.width, native.heads, native.layers,
                    native.intermediate_size, native.max_positions, native.pad_token_id)  # fmt: skip
        elif kind == "t5_encoder":
            got = (hf.vocab_size, hf.d_model, hf.num_heads, hf.d_kv, hf.num_layers, hf.d_ff,
                   hf.relative_attention_num_buckets, hf.pad_token_id, hf.is_gated_act)  # fmt: skip
            want = (native.vocab_size, native.width, native.heads, native.head_dim,
                    native.layers, native.intermediate_size, native.relative_buckets,
                    native.pad_token_id, native.gated)  # fmt: skip
        else:
            got = (hf.vocab_size, hf.d_model, hf.encoder_attention_heads, hf.encoder_layers,
                   hf.encoder_ffn_dim, hf.max_position_embeddings, hf.pad_token_id)  # fmt: skip
            want = (native.vocab_size, native.width, native.heads, native.layers,
                    native.intermediate_size, native.max_positions, native.pad_token_id)  # fmt: skip
        assert got == want, name


def test_unknown_hub_models_and_options_are_refused():
    cfg = open_clip.get_model_config("nllb-clip-base")
    with pytest.raises(ConfigError, match="unknown HF text model 'bert-base-uncased'"):
        hf_text_keys.config_to_native({**cfg, "text_cfg": {"hf_model_name": "bert-base-uncased"}})
    with pytest.raises(ConfigError, match="hf_pooler_type 'max_pooler' is not supported"):
        hf_text_keys.config_to_native(
            {**cfg, "text_cfg": {**cfg["text_cfg"], "hf_pooler_type": "max_pooler"}})  # fmt: skip
    odd = get_config("nllb-clip-base")
    with pytest.raises(ConfigError, match="no HF hub model open_clip can name"):
        hf_text_keys.config_from_native(odd.replace(text=type(odd.text)(layers=3)))
