"""open_clip's Swin CLIP (``swin_base_patch4_window7_224``: timm's ``SwinTransformer`` under
``TimmModel``): clipforge's native tower reproduces open_clip's embeddings and every stage of
``forward_intermediates`` (≤ 1e-5, fp32, perturbed random weights) on a reduced twin whose
stages cover shifted windows, a whole-map window and a map smaller than the window; weights
and hub directories load and save back; counts and configs equal open_clip's."""

from __future__ import annotations

import functools
from functools import partial

import open_clip
import pytest
import torch
from safetensors.torch import load_file
from timm.models.swin_transformer import SwinTransformer

import clipforge
from clipforge.checkpoints.formats import openai, swin_keys
from clipforge.configs import ClipConfig, ConfigError, TextConfig, get_config
from clipforge.configs.swin import SwinConfig
from clipforge.models import SwinTower

from ..conftest import max_diff, perturb_, sample_images, sample_tokens
from .zoo_helpers import (
    assert_same_embeddings,
    assert_same_outputs,
    checkpointed_image_pass,
    open_clip_counts,
    register_timm_trunk,
    write_open_clip_hub,
)

TOL = 1e-5
pytestmark = pytest.mark.parity
NAME = "swin_base_patch4_window7_224"
TEXT = {"context_length": 16, "vocab_size": 500, "width": 32, "heads": 2, "layers": 2}
#: 64 px / patch 4: maps 16, 8, 4, 2 with window 4 → shifted, shifted, whole map, 2×2 window
TINY = dict(img_size=64, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2, 2, 1),
            num_heads=(1, 2, 2, 4))  # fmt: skip
TIMM_NAME = "clipforge_test_swin"


def _register_tiny_trunk() -> None:
    """The reduced trunk in timm's registry, so open_clip's ``TimmModel`` builds its head."""
    register_timm_trunk(TIMM_NAME, partial(SwinTransformer, **TINY))


@functools.cache
def _reference() -> tuple[torch.nn.Module, ClipConfig]:
    """(Cached; tests only read it.) open_clip's CLIP around the reduced trunk, perturbed,
    and the clipforge config of the same sizes."""
    _register_tiny_trunk()
    torch.manual_seed(0)
    vision = {"timm_model_name": TIMM_NAME, "timm_pool": "", "timm_proj": "linear",
              "image_size": 64}  # fmt: skip
    ref = open_clip.model.CLIP(24, vision, TEXT)
    swin = SwinConfig(image_size=64, window_size=4, width=16, depths=(2, 2, 2, 1),
                      heads=(1, 2, 2, 4))  # fmt: skip
    return perturb_(ref).eval(), ClipConfig(24, swin, TextConfig(**TEXT))


def _native() -> clipforge.models.CLIP:
    ref, config = _reference()
    model = clipforge.create_model(config)
    model.load_state_dict(openai.to_native(ref.state_dict()), strict=True)
    return model.eval()


def test_reduced_tower_matches_open_clip():
    ref, _ = _reference()
    model = _native()
    images, tokens = sample_images(64), sample_tokens(16, 500)
    assert_same_embeddings(model, ref, images, tokens, TOL)
    with torch.no_grad():
        want = ref.visual.trunk.forward_features(images).flatten(1, 2)
        assert max_diff(model.visual.forward_features(images), want) <= TOL


def test_shifted_windows_and_bias_are_exercised():
    """Parity would not notice a dropped shift, mask or bias if they did not matter: they do."""
    model = _native()
    tower = model.visual
    assert isinstance(tower, SwinTower)
    assert [b.shift for b in tower.blocks] == [0, 2, 0, 2, 0, 0, 0]
    assert [b.window for b in tower.blocks] == [4, 4, 4, 4, 4, 4, 2]
    images = sample_images(64)
    with torch.no_grad():
        before = model.encode_image(images)
        tower.blocks[1].shift = 0  # windows not shifted (and so unmasked)
        assert max_diff(model.encode_image(images), before) > 10 * TOL
        tower.blocks[1].shift = 2
        tower.blocks[0].attn.relative_position_bias_table.add_(1.0)
        tower.blocks[0].attn.relative_position_bias_table[0].add_(3.0)
        assert max_diff(model.encode_image(images), before) > 10 * TOL


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"indices": 2, "normalize_intermediates": True},
     {"indices": [0, 1], "stop_early": True, "intermediates_only": True},
     {"indices": [-1], "output_fmt": "NLC"}],
    ids=["every-stage", "last-two-normed", "stop-early-only", "nlc"],
)  # fmt: skip
def test_every_stage_matches_open_clip_forward_intermediates(kwargs):
    ref, _ = _reference()
    model = _native()
    images = sample_images(64)
    with torch.no_grad():
        theirs = dict(kwargs, output_fmt="NCHW")
        want = ref.visual.forward_intermediates(images, **theirs)
        got = model.visual.forward_intermediates(images, **kwargs)
    if kwargs.get("output_fmt") == "NLC":  # timm: NCHW only; ours flattens
        want["image_intermediates"] = [w.flatten(2).transpose(1, 2) for w in want["image_intermediates"]]
    assert_same_outputs(got, want, TOL)


def test_trains_with_checkpointing_and_lit():
    model = _native()
    checkpointed_image_pass(model, sample_images(64), TOL).sum().backward()
    assert model.visual.blocks[0].attn.relative_position_bias_table.grad is not None
    model.visual.lock(1)
    trainable = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    assert "trunk.norm.weight" in trainable and "head.proj.weight" in trainable
    assert not any(n.startswith("trunk.layers.2.") for n in trainable)
    assert "trunk.layers.0.blocks.0.attn.relative_position_bias_table" in (
        model.visual.no_weight_decay()
    )


def test_other_input_sizes_are_refused():
    model = _native()
    with pytest.raises(ValueError, match="built for a 16² map, got 8×8"):
        model.encode_image(sample_images(32))


@pytest.mark.slow
def test_full_size_through_open_clip_directories(tmp_path):
    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model(NAME)).eval()
    state = write_open_clip_hub(tmp_path / "hub", open_clip.get_model_config(NAME), ref)
    model = clipforge.load(tmp_path / "hub")
    assert model.config == get_config(NAME)
    images, tokens = sample_images(224), sample_tokens()
    assert_same_embeddings(model, ref, images, tokens, TOL)
    with torch.no_grad():
        got = model.visual.forward_intermediates(images)["image_intermediates"]
        want = ref.visual.forward_intermediates(images)["image_intermediates"]
        assert all(max_diff(g, w) <= TOL for g, w in zip(got, want, strict=True))
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    back = load_file(str(out / "open_clip_model.safetensors"))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_architecture_counts_and_configs_equal_open_clips():
    with torch.device("meta"):
        assert clipforge.create_model(NAME).num_parameters() == open_clip_counts(NAME)
    theirs = open_clip.get_model_config(NAME)
    assert swin_keys.config_to_native(theirs) == get_config(NAME)
    back = swin_keys.config_from_native(get_config(NAME))
    assert back["vision_cfg"] == theirs["vision_cfg"]
    assert swin_keys.config_to_native(back) == get_config(NAME)
    assert ClipConfig.from_dict(get_config(NAME).to_dict()) == get_config(NAME)


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="one entry per stage"):
        SwinConfig(depths=(2, 2), heads=(1,))
    with pytest.raises(ConfigError, match="not a multiple of window_size"):
        SwinConfig(image_size=160, patch_size=4, window_size=7, depths=(1, 1), heads=(1, 1))
    cfg = open_clip.get_model_config(NAME)
    with pytest.raises(ConfigError, match="not a supported timm Swin trunk"):
        swin_keys.config_to_native({**cfg, "vision_cfg": {**cfg["vision_cfg"],
                                                          "timm_model_name": "swin_x"}})  # fmt: skip
    _, tiny = _reference()
    with pytest.raises(ConfigError, match="no timm Swin trunk"):
        swin_keys.config_from_native(tiny)
