"""open_clip's CLIP ViT options on clipforge's ViT and text towers: layer scale
(``ls_init_value``, ``ViT-M-16-alt``) and CLIPA's towers (no ``ln_pre``, average pool,
``final_ln_after_pool``; a bidirectional text tower pooled at the last position). Reduced
twins (conftest) reproduce open_clip's embeddings and every block of ``forward_intermediates``
(≤ 1e-5, fp32, perturbed random weights); weights and hub directories load and save back
tensor for tensor; parameter counts and configs equal open_clip's."""

from __future__ import annotations

import dataclasses
import functools
import json

import open_clip
import pytest
import torch
from safetensors.torch import load_file

import clipforge
from clipforge.checkpoints.formats import open_clip as open_clip_format, openai
from clipforge.configs import ClipConfig, get_config

from ..conftest import max_diff, open_clip_tiny_twin, perturb_, sample_images, sample_tokens
from .zoo_helpers import (
    assert_same_embeddings,
    assert_same_outputs,
    checkpointed_image_pass,
    open_clip_counts,
    write_open_clip_hub,
)

TOL = 1e-5
pytestmark = pytest.mark.parity
TWINS = ("ViT-M-16-alt", "ViT-L-14-CLIPA", "ViT-bigG-14-CLIPA")
ARCHITECTURES = ("ViT-M-16-alt", *(n for n in open_clip.list_models() if "CLIPA" in n))


@functools.cache
def _reference(name: str) -> tuple[torch.nn.Module, dict]:
    """(Cached; tests only read it.) open_clip's CLIP of the reduced twin, perturbed."""
    cfg = open_clip_tiny_twin(name)
    torch.manual_seed(0)
    ref = open_clip.model.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
    return perturb_(ref).eval(), cfg


def _native(name: str) -> clipforge.models.CLIP:
    ref, cfg = _reference(name)
    model = clipforge.create_model(open_clip_format.config_to_native(cfg))
    model.load_state_dict(openai.to_native(ref.state_dict()), strict=True)
    return model.eval()


def _inputs(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    text = cfg["text_cfg"]
    return sample_images(cfg["vision_cfg"]["image_size"]), sample_tokens(
        text["context_length"], text["vocab_size"]
    )


@pytest.mark.parametrize("name", TWINS)
def test_reduced_twin_matches_open_clip(name):
    ref, cfg = _reference(name)
    model = _native(name)
    images, tokens = _inputs(cfg)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL


def test_the_options_are_exercised():
    """Parity would not notice a dropped option if it did not change the output: each does."""
    images, tokens = _inputs(_reference("ViT-L-14-CLIPA")[1])
    model = _native("ViT-L-14-CLIPA")
    with torch.no_grad():
        image, text = model.encode_image(images), model.encode_text(tokens)
        model.text.pool_last = False  # pool at the EOT (argmax) instead of the last position
        assert max_diff(model.encode_text(tokens), text) > 10 * TOL
        model.visual.pool_type = "tok"
        assert max_diff(model.encode_image(images), image) > 10 * TOL
        model.visual.pool_type, model.visual.final_ln_after_pool = "avg", False
        assert max_diff(model.encode_image(images), image) > 10 * TOL
    alt = _native("ViT-M-16-alt")
    block = alt.visual.blocks[0]
    assert block.ls_1.gamma.shape == (64,) and block.ls_2.gamma.shape == (64,)
    images, _ = _inputs(_reference("ViT-M-16-alt")[1])
    with torch.no_grad():
        before = alt.encode_image(images)
        block.ls_1.gamma.mul_(3.0)
        assert max_diff(alt.encode_image(images), before) > 10 * TOL


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"image_indices": 1, "text_indices": 1, "image_output_fmt": "NLC",
          "image_output_extra_tokens": True},
     {"image_indices": [0], "text_indices": [0], "stop_early": True,
      "normalize_intermediates": True, "normalize": False}],
    ids=["every-block", "last-nlc-prefix", "first-stop-early-normed"],
)  # fmt: skip
@pytest.mark.parametrize("name", TWINS[:2])
def test_forward_intermediates_match_open_clip(name, kwargs):
    ref, cfg = _reference(name)
    model = _native(name)
    images, tokens = _inputs(cfg)
    if kwargs.get("stop_early"):  # open_clip's CLIP ignores stop_early for text; clipforge not
        tokens = None
    with torch.no_grad():
        want = ref.forward_intermediates(images, tokens, **kwargs)
        got = model.forward_intermediates(images, tokens, **kwargs)
    assert_same_outputs(got, want, TOL)


@pytest.mark.parametrize("name", TWINS)
def test_open_clip_hub_directory_loads_and_saves_back(tmp_path, name):
    ref, cfg = _reference(name)
    state = write_open_clip_hub(tmp_path / "hub", cfg, ref)
    model = clipforge.load(tmp_path / "hub")
    images, tokens = _inputs(cfg)
    assert_same_embeddings(model, ref, images, tokens, TOL)
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    back = load_file(str(out / "open_clip_model.safetensors"))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    written = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]
    assert open_clip_format.config_to_native(written) == model.config
    rebuilt = open_clip.model.CLIP(written["embed_dim"], written["vision_cfg"],
                                   written["text_cfg"]).eval()  # fmt: skip
    rebuilt.load_state_dict(back, strict=True)  # open_clip builds the same model from it
    with torch.no_grad():
        assert max_diff(rebuilt.encode_text(tokens), ref.encode_text(tokens)) <= TOL


def test_layer_scale_towers_train_with_checkpointing_and_lit():
    model = _native("ViT-M-16-alt")
    images, _ = _inputs(_reference("ViT-M-16-alt")[1])
    checkpointed_image_pass(model, images, TOL).sum().backward()
    assert model.visual.blocks[0].ls_1.gamma.grad is not None
    model.visual.lock(1)
    trainable = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    assert "transformer.resblocks.1.ls_2.gamma" in trainable
    assert not any(n.startswith("transformer.resblocks.0.") for n in trainable)
    assert _native("ViT-L-14-CLIPA").text.input_spec() == {"pooling": "last"}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_counts_and_configs_equal_open_clips(name):
    with torch.device("meta"):
        assert clipforge.create_model(name).num_parameters() == open_clip_counts(name)
    theirs = open_clip.get_model_config(name)
    assert open_clip_format.config_to_native(theirs) == get_config(name)
    assert ClipConfig.from_dict(get_config(name).to_dict()) == get_config(name)
    back = open_clip_format.config_from_native(get_config(name))
    for section in ("vision_cfg", "text_cfg"):
        options = {"ls_init_value", "no_ln_pre", "pool_type", "final_ln_after_pool",
                   "no_causal_mask"} & set(theirs[section])  # fmt: skip
        assert {k: back[section][k] for k in options} == {k: theirs[section][k] for k in options}


def test_plain_vit_configs_keep_their_json():
    """The new options are written only when set: older architecture files are unchanged."""
    plain = get_config("ViT-B-32").to_dict()
    assert not {"ls_init_value", "no_ln_pre", "pool_type", "final_ln_after_pool"} & set(
        plain["vision"]
    )
    assert not {"causal", "pool_type"} & set(plain["text"])
    alt = get_config("ViT-M-16-alt")
    assert alt.to_dict()["vision"]["ls_init_value"] == 1e-4
    plain_twin = dataclasses.replace(get_config("ViT-M-32-alt").vision, patch_size=16)
    assert dataclasses.replace(alt.vision, ls_init_value=None) == plain_twin


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-M-16-alt", "ViT-L-14-CLIPA"])
def test_full_size_matches_open_clip(name):
    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model(name)).eval()
    model = clipforge.create_model(name).eval()
    model.load_state_dict(openai.to_native(ref.state_dict()), strict=True)
    cfg = open_clip.get_model_config(name)
    images, tokens = _inputs(cfg)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
