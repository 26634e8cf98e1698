"""Perception Encoder (PE-Core): clipforge's native tower reproduces open_clip's (timm
``vit_pe_core_*`` trunk) embeddings and every block of ``forward_intermediates`` (≤ 1e-5,
fp32, perturbed random weights), the key mapping round-trips exactly, every PE-Core
architecture has open_clip's parameter counts, and the tower implements the ``Tower``
protocol (LiT, LoRA, gradient checkpointing, ONNX)."""

from __future__ import annotations

import dataclasses
import functools
import json

import open_clip
import pytest
import timm
import torch
from open_clip.timm_model import TimmModel

import clipforge
from clipforge.checkpoints.formats import detect_state_format, pe_keys
from clipforge.configs import ClipConfig, ConfigError, TextConfig, get_config, list_architectures
from clipforge.configs.param_counts import count_parameters
from clipforge.configs.pe import PE_TRUNKS, PerceptionVisionConfig
from clipforge.lora import apply_lora, merge_lora
from clipforge.models import PerceptionVisionTransformer

from ..conftest import max_diff, perturb_, sample_images, sample_tokens
from .zoo_helpers import assert_same_outputs

TOL = 1e-5
pytestmark = pytest.mark.parity
PE = sorted(n for n in open_clip.list_models() if n.startswith("PE-Core"))
TEXT = {"context_length": 16, "vocab_size": 500, "width": 32, "heads": 2, "layers": 2}
#: reduced twins: (timm trunk, image size, timm size overrides); base's 14-grid rotary
#: frequencies are rescaled onto a 4x4 grid, gigantic has no class token and no grid offset
TINY = {
    "base-rescaled": ("vit_pe_core_base_patch16_224", 64,
                      {"embed_dim": 64, "depth": 3, "num_heads": 4}),
    "gigantic-no-cls": ("vit_pe_core_gigantic_patch14_448", 56,
                        {"embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 8960 / 1536}),
    "tiny-native-grid": ("vit_pe_core_tiny_patch16_384", 384,
                         {"embed_dim": 48, "depth": 2, "num_heads": 3}),
}  # fmt: skip


@functools.cache
def _reference(name: str) -> tuple[torch.nn.Module, ClipConfig]:
    """(Cached; tests only read it.) open_clip's ``CustomTextCLIP`` with a reduced timm PE
    trunk (built as open_clip builds it: ``num_classes=embed_dim``, ``global_pool='map'``)."""
    trunk_name, size, small = TINY[name]
    embed_dim = 24
    torch.manual_seed(0)
    ref = open_clip.model.CustomTextCLIP(
        embed_dim,
        {"image_size": size, "layers": 1, "width": 32, "patch_size": 14, "head_width": 32},
        TEXT,
    )
    with torch.device("meta"):  # open_clip's adapter around the full-size trunk...
        visual = TimmModel(trunk_name, embed_dim, image_size=size, pool="map", proj=None)
    visual.trunk = timm.create_model(  # ...swapped for a real, reduced one
        trunk_name, num_classes=embed_dim, global_pool="map", img_size=size, **small
    )
    ref.visual = visual
    assert not any(p.is_meta for p in ref.parameters())
    trunk = PE_TRUNKS[trunk_name]
    vision = dataclasses.replace(
        trunk, image_size=size, width=small["embed_dim"], layers=small["depth"],
        heads=small["num_heads"],
    )  # fmt: skip
    return perturb_(ref).eval(), ClipConfig(embed_dim, vision, TextConfig(**TEXT))


def _native(name: str) -> clipforge.models.CLIP:
    ref, config = _reference(name)
    model = clipforge.create_model(config)
    model.load_state_dict(pe_keys.to_native(ref.state_dict()), strict=True)
    return model.eval()


@pytest.mark.parametrize("name", sorted(TINY))
def test_reduced_pe_matches_open_clip(name):
    ref, config = _reference(name)
    model = _native(name)
    images = sample_images(config.vision.image_size)
    tokens = sample_tokens(TEXT["context_length"], TEXT["vocab_size"])
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
        want = ref.visual.trunk.forward_features(images)
        assert max_diff(model.visual.forward_features(images), want) <= TOL


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"indices": 2, "output_fmt": "NLC", "output_extra_tokens": True},
     {"indices": [0, -2], "stop_early": True, "normalize_intermediates": True},
     {"indices": [1], "intermediates_only": True, "output_extra_tokens": True}],
    ids=["every-block", "last-two-nlc-prefix", "list-stop-early-normed", "only"],
)  # fmt: skip
@pytest.mark.parametrize("name", sorted(TINY))
def test_every_block_matches_open_clip_forward_intermediates(name, kwargs):
    ref, config = _reference(name)
    model = _native(name)
    images = sample_images(config.vision.image_size)
    theirs = dict(kwargs)
    if not config.vision.class_token:  # timm fails to return prefix tokens it does not have
        theirs.pop("output_extra_tokens", None)
    with torch.no_grad():
        want = ref.visual.forward_intermediates(images, **theirs)
        got = model.visual.forward_intermediates(images, **kwargs)
    assert_same_outputs(got, want, TOL)  # no prefix without a class token


@pytest.mark.parametrize("name", sorted(TINY))
def test_key_mapping_round_trips_exactly(name):
    ref, config = _reference(name)
    state = ref.state_dict()
    assert detect_state_format(state).name == "open_clip_pe"  # not SigLIP's, not ours
    native = pe_keys.to_native(state)
    assert not pe_keys.matches(native)
    assert set(native) == set(clipforge.create_model(config).state_dict())
    back = pe_keys.from_native(native)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(KeyError, match="no Perception Encoder mapping"):
        pe_keys.to_native({**state, "visual.trunk.blocks.0.attn.odd": torch.zeros(1)})


@pytest.mark.slow  # ~3.5 s: the reduced twins cover every path in the fast tier
def test_full_size_pe_core_t_matches_open_clip():
    """PE-Core-T at its real size (6 M image parameters, 384 px, its 24x24 rotary grid)."""
    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model("PE-Core-T-16-384")).eval()
    model = clipforge.create_model("PE-Core-T-16-384")
    model.load_state_dict(pe_keys.to_native(ref.state_dict()), strict=True)
    images, tokens = sample_images(384), sample_tokens(32)
    with torch.no_grad():
        assert max_diff(model.eval().encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL


@pytest.mark.slow
def test_full_size_pe_core_b16_through_open_clip_directories(tmp_path):
    """``clipforge.load`` reads open_clip's PE hub directory (same embeddings, every block's
    intermediates), ``clipforge.save(format="open_clip")`` writes it back tensor for tensor."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model("PE-Core-B-16")).eval()
    cfg = open_clip.get_model_config("PE-Core-B-16")
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(hub / "open_clip_model.safetensors"))
    model = clipforge.load(hub)
    assert model.config == get_config("PE-Core-B-16")
    images, tokens = sample_images(224), sample_tokens(32)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
        got = model.visual.forward_intermediates(images)["image_intermediates"]
        want = ref.visual.forward_intermediates(images)["image_intermediates"]
    assert len(got) == 12 and all(max_diff(g, w) <= TOL for g, w in zip(got, want, strict=True))
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    assert json.loads((out / "open_clip_config.json").read_text())["model_cfg"] == cfg
    back = load_file(str(out / "open_clip_model.safetensors"))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


# ----------------------------------------------------------------------------- architectures
def test_every_pe_core_release_has_an_architecture():
    assert [n for n in list_architectures() if n.startswith("PE-Core")] == PE


@pytest.mark.parametrize("name", PE)
def test_parameter_counts_equal_open_clip(name):
    with torch.device("meta"):
        ours = clipforge.create_model(name)
        ref = open_clip.create_model(name, device="meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    expected = {"image": count(ref.visual), "text": count(ref.text), "total": count(ref)}
    assert ours.num_parameters() == expected
    assert count_parameters(get_config(name)) == expected


@pytest.mark.parametrize("name", PE)
def test_open_clip_model_cfg_converts_both_ways(name):
    theirs = open_clip.get_model_config(name)
    assert pe_keys.config_to_native(theirs) == get_config(name)
    assert pe_keys.config_from_native(get_config(name)) == theirs
    assert ClipConfig.from_dict(get_config(name).to_dict()) == get_config(name)


def test_configs_open_clip_cannot_build_are_refused():
    config = get_config("PE-Core-B-16")
    odd = config.replace(vision=dataclasses.replace(config.vision, layers=5))
    with pytest.raises(ConfigError, match="no timm PE-Core trunk"):
        pe_keys.config_from_native(odd)
    cfg = open_clip.get_model_config("PE-Core-B-16")
    vision = cfg["vision_cfg"]
    with pytest.raises(ConfigError, match="not a timm PE-Core trunk"):
        pe_keys.config_to_native({**cfg, "vision_cfg": {**vision, "timm_model_name": "vit_x"}})
    with pytest.raises(ConfigError, match="built at 224 px"):
        pe_keys.config_to_native({**cfg, "vision_cfg": {**vision, "image_size": 256}})
    with pytest.raises(ConfigError, match="head width divisible by 4"):
        PerceptionVisionConfig(width=36, heads=6, pool_heads=6)
    with pytest.raises(ConfigError, match="pool_heads"):
        PerceptionVisionConfig(width=64, heads=4, pool_heads=3)


def test_default_preprocessing_is_the_release_pipeline():
    """PE-Core releases squash to the square with bilinear resizing and 0.5 mean/std."""
    pp = open_clip.get_pretrained_cfg("PE-Core-B-16", "meta")
    with torch.device("meta"):
        model = clipforge.create_model("PE-Core-B-16")
    config = model.preprocess_config
    assert (config.interpolation, config.resize_mode) == (pp["interpolation"], pp["resize_mode"])
    assert config.mean == pytest.approx(pp["mean"]) and config.std == pytest.approx(pp["std"])


# ----------------------------------------------------------------------------- Tower protocol
def test_lit_lock_decay_and_grad_checkpointing():
    model = _native("base-rescaled").train()
    tower = model.visual
    assert isinstance(tower, PerceptionVisionTransformer) and len(tower.blocks) == 3
    no_decay = tower.no_weight_decay()
    assert {"positional_embedding", "class_embedding", "attn_pool.latent", "proj.bias"} <= no_decay
    images = sample_images(64)
    plain = model.encode_image(images)
    plain.sum().backward()
    grads = {n: p.grad.clone() for n, p in tower.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert tower.transformer.grad_checkpointing
    checkpointed = model.encode_image(images)
    checkpointed.sum().backward()
    assert max_diff(plain, checkpointed) <= TOL
    assert all(max_diff(p.grad, grads[n]) <= TOL for n, p in tower.named_parameters())
    tower.lock(1)
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("transformer.resblocks.2.", "ln_post.", "attn_pool.", "proj."))
        for n in trainable
    )


def test_lora_adapts_pe_blocks_and_merges_back():
    model = _native("gigantic-no-cls")
    images = sample_images(56)
    with torch.no_grad():
        before = model.encode_image(images)
    apply_lora(model, rank=2, towers=("image",))
    adapted = [n for n, _ in model.named_parameters() if n.endswith("lora_A")]
    assert len(adapted) == 2 * 4  # in_proj, out_proj, c_fc, c_proj per block
    with torch.no_grad():
        assert max_diff(model.encode_image(images), before) <= TOL  # B starts at zero
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_(std=0.1)
        changed = model.encode_image(images)
    assert max_diff(changed, before) > 1e-3
    merge_lora(model)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), changed) <= TOL


def test_native_save_load_and_onnx_export(tmp_path):
    from clipforge.onnx import OnnxClip
    from clipforge.onnx.export import export_onnx

    _, config = _reference("base-rescaled")
    config = config.replace(text=TextConfig(**{**TEXT, "vocab_size": 49408}))
    torch.manual_seed(0)
    model = perturb_(clipforge.create_model(config)).eval()
    clipforge.save(model, tmp_path / "pe")
    loaded = clipforge.load(tmp_path / "pe")
    assert loaded.config == model.config
    pixels = sample_images(64, n=3)
    with torch.no_grad():
        want = model.encode_image(pixels)
        assert max_diff(loaded.encode_image(pixels), want) == 0.0
        tokens = model.visual.forward_features(pixels)
    export_onnx(model, tmp_path / "onnx", tokens=True)
    features, got_tokens = OnnxClip(tmp_path / "onnx").encode_image_tokens(pixels.numpy())
    assert abs(features - want.numpy()).max() <= TOL
    assert got_tokens.shape == (3, 1 + 16, 64)
    assert abs(got_tokens - tokens.numpy()).max() <= TOL
