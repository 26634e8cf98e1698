"""clipforge loads transformers CLIPModel checkpoints with identical embeddings, and saves them back."""

from __future__ import annotations

import dataclasses
import json

import open_clip
import pytest
import torch
from transformers import CLIPConfig, CLIPModel

import clipforge
from clipforge.checkpoints.formats import open_clip as open_clip_format

from ..conftest import (
    max_diff,
    open_clip_tiny_twin,
    perturb_,
    sample_images,
    sample_tokens,
    tiny_vit_config,
)

TOL = 1e-5
pytestmark = pytest.mark.parity
SMALL = {
    "text_config": {
        "hidden_size": 64,
        "intermediate_size": 100,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 20,
        "vocab_size": 1000,
        "eos_token_id": 999,
        "bos_token_id": 998,
    },
    "vision_config": {
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 3,
        "image_size": 32,
        "patch_size": 8,
        "hidden_act": "quick_gelu",
    },
    "projection_dim": 24,
}
SMALL_GELU_FIRST_EOS = {  # GELU, and an EOS id that is not the largest: first-occurrence pooling
    "text_config": {**SMALL["text_config"], "eos_token_id": 5, "hidden_act": "gelu"},
    "vision_config": {**SMALL["vision_config"], "hidden_act": "gelu"},
    "projection_dim": 24,
}
TINY_DEFAULT = {  # transformers' default CLIPConfig (ViT-B/32) with the sizes shrunk
    "text_config": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                    "num_attention_heads": 2},
    "vision_config": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "image_size": 96},
    "projection_dim": 32,
}  # fmt: skip
MIXED_TOWERS = {  # towers that differ: activation and LayerNorm eps per tower
    "text_config": {**SMALL["text_config"], "hidden_act": "quick_gelu", "layer_norm_eps": 1e-3},
    "vision_config": {**SMALL["vision_config"], "hidden_act": "gelu", "layer_norm_eps": 1e-5},
    "projection_dim": 24,
}
MIXED_TANH = {  # tanh-GELU text tower (a per-tower-only activation), QuickGELU vision
    "text_config": {**SMALL["text_config"], "hidden_act": "gelu_pytorch_tanh",
                    "layer_norm_eps": 1e-6},
    "vision_config": {**SMALL["vision_config"], "hidden_act": "quick_gelu"},
    "projection_dim": 24,
}  # fmt: skip
CONFIGS = {
    "small": SMALL,
    "small-gelu-first-eos": SMALL_GELU_FIRST_EOS,
    "tiny-default": TINY_DEFAULT,
    "mixed-towers": MIXED_TOWERS,
    "mixed-tanh": MIXED_TANH,
    "default": {},  # full size: the slow tier's one HF check
}
SMALL_CONFIGS = ["small", "small-gelu-first-eos", "tiny-default", "mixed-towers", "mixed-tanh"]


def _features(model: CLIPModel, images, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        image = model.get_image_features(pixel_values=images)
        text = model.get_text_features(input_ids=tokens)
    unwrap = lambda out: out if isinstance(out, torch.Tensor) else out.pooler_output  # noqa: E731
    return unwrap(image), unwrap(text)


def _inputs(cfg: CLIPConfig) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = sample_tokens(cfg.text_config.max_position_embeddings, cfg.text_config.vocab_size)
    if cfg.text_config.eos_token_id not in (2, cfg.text_config.vocab_size - 1):
        tokens[:, -1] = cfg.text_config.eos_token_id  # a later EOS must not win
        tokens[:, 3] = cfg.text_config.eos_token_id
    return sample_images(cfg.vision_config.image_size), tokens


@pytest.fixture(scope="module")
def hf_checkpoint(request, tmp_path_factory):
    """A perturbed CLIPModel of CONFIGS[param], saved with save_pretrained (built once)."""
    torch.manual_seed(0)
    model = perturb_(CLIPModel(CLIPConfig(**CONFIGS[request.param]))).eval()
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return model, path


@pytest.mark.parametrize(
    "hf_checkpoint",
    [*SMALL_CONFIGS, pytest.param("default", marks=pytest.mark.slow)],
    indirect=True,
)
def test_hf_directory_parity(hf_checkpoint):
    ref, path = hf_checkpoint
    images, tokens = _inputs(ref.config)
    want_image, want_text = _features(ref, images, tokens)
    model = clipforge.load(path)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), want_image) <= TOL
        assert max_diff(model.encode_text(tokens), want_text) <= TOL
    assert model.preprocess_config.pipeline == "hf"


@pytest.mark.parametrize("hf_checkpoint", SMALL_CONFIGS, indirect=True)
def test_pytorch_model_bin_is_read_too(hf_checkpoint, tmp_path):
    ref, _ = hf_checkpoint
    ref.config.save_pretrained(tmp_path)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    images, tokens = _inputs(ref.config)
    want_image, _ = _features(ref, images, tokens)
    with torch.no_grad():
        assert max_diff(clipforge.load(tmp_path).encode_image(images), want_image) <= TOL


@pytest.mark.parametrize("hf_checkpoint", SMALL_CONFIGS, indirect=True)
def test_save_hf_round_trip_loads_in_transformers(hf_checkpoint, tmp_path):
    ref, path = hf_checkpoint
    ours = clipforge.load(path)
    clipforge.save(ours, tmp_path / "hf", format="hf")
    reloaded = CLIPModel.from_pretrained(tmp_path / "hf").eval()
    images, tokens = _inputs(ref.config)
    want_image, want_text = _features(ref, images, tokens)
    got_image, got_text = _features(reloaded, images, tokens)
    assert max_diff(got_image, want_image) <= TOL
    assert max_diff(got_text, want_text) <= TOL
    pp = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert pp["crop_size"] == {
        "height": ref.config.vision_config.image_size,
        "width": ref.config.vision_config.image_size,
    }


@pytest.mark.parametrize("architecture", ["ViT-B-32-quickgelu", "RN50"])
def test_save_open_clip_round_trip_loads_in_open_clip(architecture, tmp_path):
    """On the tiny twin of the architecture (same config, sizes shrunk)."""
    cfg = open_clip_format.config_to_native(open_clip_tiny_twin(architecture))
    torch.manual_seed(0)
    ours = perturb_(clipforge.create_model(cfg)).eval()
    clipforge.save(ours, tmp_path, format="open_clip")
    ref = open_clip.create_model(f"local-dir:{tmp_path}").eval()
    images, tokens = sample_images(cfg.vision.image_size), sample_tokens()
    with torch.no_grad():
        assert max_diff(ref.encode_image(images), ours.encode_image(images)) <= TOL
        assert max_diff(ref.encode_text(tokens), ours.encode_text(tokens)) <= TOL


def test_save_clipforge_round_trip(tmp_path):
    torch.manual_seed(0)
    ours = perturb_(clipforge.create_model(tiny_vit_config(), activation="quick_gelu")).eval()
    clipforge.save(ours, tmp_path, format="clipforge")
    back = clipforge.load(tmp_path)
    assert back.config == ours.config
    assert back.preprocess_config == ours.preprocess_config
    for (k, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_resnet_cannot_be_saved_as_hf(tmp_path):
    with torch.device("meta"):
        model = clipforge.create_model("RN50")
    with pytest.raises(ValueError, match="no ResNet"):
        clipforge.save(model, tmp_path, format="hf")


@pytest.mark.parametrize("hf_checkpoint", ["mixed-towers"], indirect=True)
def test_towers_that_differ_keep_their_own_settings(hf_checkpoint, tmp_path):
    """Per-tower activation/eps are read exactly and survive a clipforge-format round trip;
    open_clip's CLIP cannot express them, so saving there is refused (not silently wrong)."""
    _, path = hf_checkpoint
    model = clipforge.load(path)
    cfg = model.config
    assert (cfg.activation, cfg.norm_eps) == ("gelu", 1e-5)
    assert (cfg.text.activation, cfg.text.norm_eps) == ("quick_gelu", 1e-3)
    assert model.text.ln_final.eps == 1e-3 and model.visual.ln_post.eps == 1e-5
    clipforge.save(model, tmp_path / "native", format="clipforge")
    assert clipforge.load(tmp_path / "native").config == cfg
    with pytest.raises(ValueError, match="text.activation, text.norm_eps per tower"):
        clipforge.save(model, tmp_path / "oc", format="open_clip")


@pytest.mark.parametrize("tower", ["text_config", "vision_config"])
def test_unsupported_activation_names_field_and_choices(tower, tmp_path):
    cfg = {**SMALL, tower: {**SMALL[tower], "hidden_act": "relu"}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError) as err:
        clipforge.load(tmp_path)
    message = str(err.value)
    assert f"{tower}.hidden_act 'relu' is not supported" in message
    assert "allowed: quick_gelu, gelu, gelu_pytorch_tanh" in message
    assert "\n" not in message.strip()


def test_open_clip_eva_layout_refuses_a_text_tower_override(tmp_path):
    cfg = clipforge.get_config("EVA02-B-16")
    cfg = cfg.replace(text=dataclasses.replace(cfg.text, activation="quick_gelu"))
    with torch.device("meta"):
        model = clipforge.create_model(cfg)
    with pytest.raises(ValueError, match="open_clip EVA text towers use GELU"):
        clipforge.save(model, tmp_path, format="open_clip")
