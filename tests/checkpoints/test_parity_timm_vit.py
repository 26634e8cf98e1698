"""open_clip's timm ViT towers (``vit_medium_patch16_gap_256``: average pool, layer scale,
no class token; ``vit_relpos_medium_patch16_cls_224``: log-coordinate relative-position MLP
bias): clipforge's native tower reproduces open_clip's embeddings and every block of
``forward_intermediates`` (≤ 1e-5, fp32, perturbed random weights), loads and saves open_clip's
layout, has open_clip's parameter counts and implements the ``Tower`` protocol."""

from __future__ import annotations

import dataclasses
import functools
import json

import open_clip
import pytest
import timm
import torch
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_relpos import VisionTransformerRelPos

import clipforge
from clipforge.checkpoints.formats import detect_state_format, timm_vit_keys
from clipforge.configs import ClipConfig, ConfigError, TextConfig, get_config
from clipforge.configs.timm_vit import TIMM_VIT_TRUNKS, TimmViTConfig
from clipforge.lora import apply_lora, merge_lora
from clipforge.models import TimmVisionTransformer

from ..conftest import max_diff, perturb_, sample_images, sample_tokens
from .zoo_helpers import assert_same_outputs, open_clip_counts

TOL = 1e-5
pytestmark = pytest.mark.parity
TEXT = {"context_length": 16, "vocab_size": 500, "width": 32, "heads": 2, "layers": 2}
SMALL = {"embed_dim": 64, "depth": 3, "num_heads": 4, "img_size": 64}
#: reduced twins: (full-size trunk whose options they keep, timm class)
TINY = {
    "gap": ("vit_medium_patch16_gap_256", VisionTransformer,
            dict(class_token=False, global_pool="avg", qkv_bias=False, init_values=1e-6,
                 fc_norm=False)),
    "relpos": ("vit_relpos_medium_patch16_cls_224", VisionTransformerRelPos,
               dict(qkv_bias=False, fc_norm=False, rel_pos_dim=32, class_token=True,
                    global_pool="token")),
}  # fmt: skip


def _register_tiny_trunks() -> None:
    """Reduced trunks in timm's registry, so open_clip's ``TimmModel`` builds its own head."""
    for name, (_, cls, options) in TINY.items():
        timm_name = f"clipforge_test_{name}_vit"
        if timm_name in timm.list_models(timm_name):
            continue

        def build(pretrained: bool = False, _cls=cls, _options=options, **kwargs):
            skip = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")  # hub plumbing
            model = _cls(**SMALL, **_options, **{k: v for k, v in kwargs.items() if k not in skip})
            model.default_cfg = model.pretrained_cfg = {}
            return model

        build.__name__ = timm_name
        register_model(build)


@functools.cache
def _reference(name: str) -> tuple[torch.nn.Module, ClipConfig]:
    """(Cached; tests only read it.) open_clip's ``CLIP`` around a reduced trunk, and the
    clipforge config of the same sizes."""
    _register_tiny_trunks()
    full, _, _ = TINY[name]
    torch.manual_seed(0)
    vision = {"timm_model_name": f"clipforge_test_{name}_vit", "timm_pool": "",
              "timm_proj": "linear", "image_size": 64}  # fmt: skip
    ref = open_clip.model.CLIP(24, vision, TEXT)
    config = dataclasses.replace(
        TIMM_VIT_TRUNKS[full], image_size=64, width=64, layers=3, heads=4,
        rel_pos_dim=32 if name == "relpos" else 0,
    )  # fmt: skip
    return perturb_(ref).eval(), ClipConfig(24, config, TextConfig(**TEXT))


def _native(name: str) -> clipforge.models.CLIP:
    ref, config = _reference(name)
    model = clipforge.create_model(config)
    model.load_state_dict(timm_vit_keys.to_native(ref.state_dict()), strict=True)
    return model.eval()


@pytest.mark.parametrize("name", sorted(TINY))
def test_reduced_tower_matches_open_clip(name):
    ref, _ = _reference(name)
    model = _native(name)
    images, tokens = sample_images(64), sample_tokens(16, 500)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
        want = ref.visual.trunk.forward_features(images)
        assert max_diff(model.visual.forward_features(images), want) <= TOL


def test_relative_position_bias_is_exercised():
    """The parity above would not notice a dropped bias if it did not matter: it does."""
    model = _native("relpos")
    images = sample_images(64)
    with torch.no_grad():
        before = model.encode_image(images)
        for block in model.visual.blocks:  # patch-to-patch logits up, class-token ones not
            block.attn.rel_pos.mlp.fc2.bias.add_(5.0)
        assert max_diff(model.encode_image(images), before) > 10 * TOL


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"indices": 2, "output_fmt": "NLC", "output_extra_tokens": True},
     {"indices": [0, -2], "stop_early": True, "normalize_intermediates": True}],
    ids=["every-block", "last-two-nlc", "list-stop-early-normed"],
)  # fmt: skip
@pytest.mark.parametrize("name", sorted(TINY))
def test_every_block_matches_open_clip_forward_intermediates(name, kwargs):
    ref, config = _reference(name)
    model = _native(name)
    images = sample_images(64)
    theirs = dict(kwargs)
    if not config.vision.class_token:  # timm fails to return prefix tokens it does not have
        theirs.pop("output_extra_tokens", None)
    with torch.no_grad():
        want = ref.visual.forward_intermediates(images, **theirs)
        got = model.visual.forward_intermediates(images, **kwargs)
    assert_same_outputs(got, want, TOL)


@pytest.mark.parametrize("name", sorted(TINY))
def test_key_mapping_round_trips_exactly(name):
    ref, config = _reference(name)
    state = ref.state_dict()
    assert detect_state_format(state).name == "open_clip_timm_vit"
    native = timm_vit_keys.to_native(state)
    assert set(native) == set(clipforge.create_model(config).state_dict())
    back = timm_vit_keys.from_native(native)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TIMM_VIT_TRUNKS))
def test_full_size_through_open_clip_directories(tmp_path, name):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model(name)).eval()
    cfg = open_clip.get_model_config(name)
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(hub / "open_clip_model.safetensors"))
    model = clipforge.load(hub)
    assert model.config == get_config(name)
    size = model.config.vision.image_size
    images, tokens = sample_images(size), sample_tokens()
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    back = load_file(str(out / "open_clip_model.safetensors"))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("name", sorted(TIMM_VIT_TRUNKS))
def test_architecture_counts_and_configs_equal_open_clips(name):
    with torch.device("meta"):
        assert clipforge.create_model(name).num_parameters() == open_clip_counts(name)
    theirs = open_clip.get_model_config(name)
    assert timm_vit_keys.config_to_native(theirs) == get_config(name)
    assert timm_vit_keys.config_from_native(get_config(name)) == theirs
    assert ClipConfig.from_dict(get_config(name).to_dict()) == get_config(name)


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="needs a class token"):
        TimmViTConfig(class_token=False, pool="token")
    cfg = open_clip.get_model_config("vit_medium_patch16_gap_256")
    with pytest.raises(ConfigError, match="not a supported timm ViT trunk"):
        timm_vit_keys.config_to_native(
            {**cfg, "vision_cfg": {**cfg["vision_cfg"], "timm_model_name": "vit_x"}}
        )
    odd = get_config("vit_medium_patch16_gap_256")
    odd = odd.replace(vision=dataclasses.replace(odd.vision, layers=3))
    with pytest.raises(ConfigError, match="no timm ViT trunk"):
        timm_vit_keys.config_from_native(odd)


# ----------------------------------------------------------------------------- Tower protocol
def test_lit_lora_and_grad_checkpointing():
    model = _native("relpos").train()
    tower = model.visual
    assert isinstance(tower, TimmVisionTransformer) and len(tower.blocks) == 3
    images = sample_images(64)
    plain = model.encode_image(images)
    plain.sum().backward()
    grads = {n: p.grad.clone() for n, p in tower.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    checkpointed = model.encode_image(images)
    checkpointed.sum().backward()
    assert max_diff(plain, checkpointed) <= TOL
    assert all(max_diff(p.grad, grads[n]) <= TOL for n, p in tower.named_parameters())
    tower.lock(1)
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("transformer.resblocks.2.", "ln_post.", "proj.")) for n in trainable
    )
    model.eval()
    with torch.no_grad():
        before = model.encode_image(images)
    apply_lora(model, rank=2, towers=("image",))
    assert len([n for n, _ in model.named_parameters() if n.endswith("lora_A")]) == 3 * 4
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_(std=0.1)
        changed = model.encode_image(images)
    assert max_diff(changed, before) > 1e-3
    merge_lora(model)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), changed) <= TOL


@pytest.mark.parametrize("name", sorted(TINY))
def test_native_save_load_and_onnx_export(tmp_path, name):
    from clipforge.onnx import OnnxClip
    from clipforge.onnx.export import export_onnx

    _, config = _reference(name)
    config = config.replace(text=TextConfig(**{**TEXT, "vocab_size": 49408}))
    torch.manual_seed(0)
    model = perturb_(clipforge.create_model(config)).eval()
    clipforge.save(model, tmp_path / "saved")
    loaded = clipforge.load(tmp_path / "saved")
    pixels = sample_images(64, n=3)
    with torch.no_grad():
        want = model.encode_image(pixels)
        assert max_diff(loaded.encode_image(pixels), want) == 0.0
    export_onnx(model, tmp_path / "onnx")
    got = OnnxClip(tmp_path / "onnx").encode_image(pixels.numpy())
    assert abs(got - want.numpy()).max() <= TOL
