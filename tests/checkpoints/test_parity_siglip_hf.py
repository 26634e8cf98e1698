"""clipforge reproduces transformers' ``SiglipModel`` (≤ 1e-5, fp32, random weights):
``get_image_features``, ``get_text_features``, ``logits_per_image``, and the state dict
round-trips back into transformers exactly."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import SiglipConfig, SiglipModel

import clipforge
from clipforge.checkpoints.formats import siglip_hf_keys

from ..conftest import max_diff, perturb_, sample_images, shared_path

TOL = 1e-5
REDUCED = {
    # SigLIP B/16 as transformers ships it (tanh-GELU in both towers)
    "base": (
        dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             image_size=64, patch_size=16),
        dict(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=16, bos_token_id=998, eos_token_id=999),
    ),
    # SO400M/14 at 384 px: an MLP of 4304/1152 of the width, a grid that drops the remainder,
    # exact GELU in the image tower, a text tower narrower than the image one
    "so400m-like": (
        dict(hidden_size=72, intermediate_size=269, num_hidden_layers=2, num_attention_heads=4,
             image_size=60, patch_size=14, hidden_act="gelu"),
        dict(vocab_size=1000, hidden_size=48, intermediate_size=179, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=16, projection_size=72,
             bos_token_id=998, eos_token_id=999),
    ),
}  # fmt: skip


def _reference(config: SiglipConfig, sharpen: bool = True) -> SiglipModel:
    """Random weights; ``sharpen`` sets the image LayerNorm gains to 4 so that MLP inputs
    are of order 1, where exact and tanh GELU differ by more than the tolerance."""
    torch.manual_seed(0)
    model = SiglipModel(config)
    with torch.no_grad():
        for module in model.vision_model.modules():
            if sharpen and isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(4.0)
    return perturb_(model).eval()


def _features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _compare(ref: SiglipModel, model: clipforge.CLIP) -> dict[str, float]:
    size, text = model.config.vision.image_size, model.config.text
    images = sample_images(size)
    tokens = torch.randint(0, text.vocab_size, (3, text.context_length),
                           generator=torch.Generator().manual_seed(5))  # fmt: skip
    with torch.no_grad():
        image, txt = model.encode_image(images), model.encode_text(tokens)
        expected = ref(pixel_values=images, input_ids=tokens)
        logits = model.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(txt, dim=-1).T
        return {
            "image": max_diff(image, _features(ref.get_image_features(pixel_values=images))),
            "text": max_diff(txt, _features(ref.get_text_features(input_ids=tokens))),
            "logits_per_image": max_diff(logits + model.logit_bias, expected.logits_per_image),
        }


def _check(ref: SiglipModel, model: clipforge.CLIP) -> None:
    model.load_state_dict(siglip_hf_keys.to_native(ref.state_dict()))
    diffs = _compare(ref, model.eval())
    assert max(diffs.values()) <= TOL, diffs
    back = siglip_hf_keys.from_native(model.state_dict())
    expected = {k: v for k, v in ref.state_dict().items() if not k.endswith("position_ids")}
    assert sorted(back) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(back[key], value), key
    ref.load_state_dict(back, strict=False)  # position_ids are buffers transformers rebuilds


@pytest.mark.parametrize("name", sorted(REDUCED))
def test_reduced_siglip_matches_transformers(name):
    vision, text = REDUCED[name]
    hf_config = SiglipConfig(vision_config=vision, text_config=text)
    ref = _reference(hf_config)
    assert siglip_hf_keys.matches(ref.state_dict())
    config = siglip_hf_keys.config_to_native(hf_config.to_dict())
    assert config.vision.mlp_width == vision["intermediate_size"]
    assert config.text.mlp_width == text["intermediate_size"]
    back = SiglipConfig(**siglip_hf_keys.config_from_native(config))
    assert siglip_hf_keys.config_to_native(back.to_dict()) == config
    _check(ref, clipforge.create_model(config))


def test_transformers_directories_load_and_save_through_the_registry(tmp_path):
    """``save_pretrained`` → ``clipforge.load(dir)`` (the hf format's SigLIP family) →
    ``clipforge.save(format="hf")`` → ``SiglipModel.from_pretrained``: the same model."""
    vision, text = REDUCED[sorted(REDUCED)[0]]
    ref = _reference(SiglipConfig(vision_config=vision, text_config=text))
    ref.save_pretrained(tmp_path / "hf")
    model = clipforge.load(tmp_path / "hf")
    _check(ref, model)
    out = clipforge.save(model, tmp_path / "saved", format="hf")
    again = SiglipModel.from_pretrained(out).eval()
    _check(again, model)
    assert clipforge.load(out).preprocess_config == model.preprocess_config


def test_open_clip_architecture_with_transformers_weights():
    """transformers' B/16 uses tanh-GELU where open_clip's uses exact GELU: the converted
    config says so, and our built-in architecture differs only in that."""
    config = siglip_hf_keys.config_to_native(SiglipConfig().to_dict())
    builtin = clipforge.get_config("ViT-B-16-SigLIP")
    assert config.vision.activation == config.text.activation == "gelu_tanh"
    assert dataclasses.replace(config.vision, activation=None) == builtin.vision
    assert dataclasses.replace(config.text, activation=None) == builtin.text


@pytest.mark.slow
def test_full_size_base_matches_transformers():
    ref = _reference(SiglipConfig(), sharpen=False)  # google/siglip-base-patch16-224's shapes
    config = siglip_hf_keys.config_to_native(ref.config.to_dict())
    _check(ref, clipforge.create_model(config))


@pytest.mark.parametrize("size", [224, 384])
def test_siglip_preprocessor_config_is_read_and_written_exactly(size):
    """``SiglipImageProcessor`` configs (crop-free square resize) become our squash pipeline,
    equal to transformers' PIL backend on the shared photos (bit-exact), and round-trip."""
    from PIL import Image
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    from clipforge.checkpoints.formats.hf_preprocess import (
        preprocess_from_native,
        preprocess_to_native,
    )
    from clipforge.preprocess import build_preprocess

    proc = SiglipImageProcessorPil(size={"height": size, "width": size})
    config = preprocess_to_native(json.loads(proc.to_json_string()))
    assert (config.image_size, config.resize_mode, config.mean) == (size, "squash", (0.5,) * 3)
    assert preprocess_to_native(preprocess_from_native(config)) == config
    ours = build_preprocess(config)
    for path in sorted(shared_path("data", "photos").iterdir()):
        image = Image.open(path)
        ref = proc(images=image, return_tensors="pt")["pixel_values"][0]
        assert torch.equal(ours(image), ref), path.name
