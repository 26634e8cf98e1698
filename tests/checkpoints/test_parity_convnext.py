"""LAION's ConvNeXt CLIPs: clipforge's native ConvNeXt tower reproduces open_clip's (timm
``ConvNeXt`` trunk + ``TimmModel`` head) embeddings and every stage of
``forward_intermediates`` (≤ 1e-5, fp32, perturbed random weights), loads and saves open_clip's
layout, has open_clip's parameter counts, and implements the ``Tower`` protocol."""

from __future__ import annotations

import functools
import json
from functools import partial

import open_clip
import pytest
import torch
from timm.models.convnext import ConvNeXt

import clipforge
from clipforge.checkpoints.formats import convnext_keys, to_native_state
from clipforge.configs import ClipConfig, ConfigError, TextConfig, get_config, list_architectures
from clipforge.configs.convnext import CONVNEXT_TRUNKS, ConvNextVisionConfig
from clipforge.configs.param_counts import count_parameters
from clipforge.models import ConvNextTower

from ..conftest import max_diff, perturb_, sample_images, sample_tokens, shared_path, tiered
from .zoo_helpers import open_clip_counts, register_timm_trunk

TOL = 1e-5
pytestmark = pytest.mark.parity
CONVNEXT = [n for n in open_clip.list_models() if n.startswith("convnext")]
TEXT = {"context_length": 16, "vocab_size": 500, "width": 32, "heads": 2, "layers": 2}
#: reduced twins: (timm size overrides, open_clip timm_proj, image size)
TINY = {
    "base-linear": (dict(depths=(1, 1, 2, 1), dims=(16, 24, 32, 40)), "linear", 64),
    "large_d-mlp": (dict(depths=(2, 1, 1, 1), dims=(8, 16, 24, 48)), "mlp", 96),
    "xxlarge-eps": (dict(depths=(1, 2, 1, 1), dims=(16, 16, 32, 32), norm_eps=1e-5), "linear", 64),
}


def _timm_name(name: str) -> str:
    return f"convnext_clipforge_test_{name.replace('-', '_')}"


def _register_tiny_trunks() -> None:
    """Reduced ConvNeXt trunks registered in timm, so open_clip's ``TimmModel`` builds its
    own head around them exactly as for ``convnext_base`` (num_classes reset, default pool)."""
    for name, (sizes, _, _) in TINY.items():
        timm_name = _timm_name(name)
        register_timm_trunk(timm_name, partial(ConvNeXt, **sizes))


@functools.cache
def _reference(name: str) -> tuple[torch.nn.Module, ClipConfig]:
    """(Cached; tests only read it.) open_clip's ``CLIP`` with a reduced timm ConvNeXt, and
    the clipforge config with the same sizes."""
    _register_tiny_trunks()
    sizes, head, size = TINY[name]
    torch.manual_seed(0)
    vision = {"timm_model_name": _timm_name(name), "timm_pool": "", "timm_proj": head,
              "image_size": size}  # fmt: skip
    ref = open_clip.model.CLIP(24, vision, TEXT)
    config = ClipConfig(
        24,
        ConvNextVisionConfig(
            image_size=size, depths=sizes["depths"], dims=sizes["dims"], head=head,
            norm_eps=sizes.get("norm_eps", 1e-6),
        ),
        TextConfig(**TEXT),
    )  # fmt: skip
    return perturb_(ref).eval(), config


def _native(name: str) -> clipforge.models.CLIP:
    ref, config = _reference(name)
    model = clipforge.create_model(config)
    model.load_state_dict(to_native_state(ref.state_dict(), "open_clip"), strict=True)
    return model.eval()


@pytest.mark.parametrize("name", sorted(TINY))
def test_reduced_convnext_matches_open_clip(name):
    ref, config = _reference(name)
    model = _native(name)
    images = sample_images(config.vision.image_size)
    tokens = sample_tokens(TEXT["context_length"], TEXT["vocab_size"])
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
        want = ref.visual.trunk.forward_features(images).flatten(2).transpose(1, 2)
        assert max_diff(model.visual.forward_features(images), want) <= TOL


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"indices": 2}, {"indices": [0, -1], "stop_early": True},
     {"indices": [1], "stop_early": True, "intermediates_only": True},
     {"normalize_intermediates": True}],
    ids=["every-stage", "last-two", "list-stop-early", "only", "normalized"],
)  # fmt: skip
@pytest.mark.parametrize("name", sorted(TINY))
def test_every_stage_matches_open_clip_forward_intermediates(name, kwargs):
    ref, config = _reference(name)
    model = _native(name)
    images = sample_images(config.vision.image_size)
    with torch.no_grad():
        want = ref.visual.forward_intermediates(images, **kwargs)
        got = model.visual.forward_intermediates(images, **kwargs)
    assert sorted(got) == sorted(want)
    assert len(got["image_intermediates"]) == len(want["image_intermediates"]) >= 1
    for g, w in zip(got["image_intermediates"], want["image_intermediates"], strict=True):
        assert g.shape == w.shape and max_diff(g, w) <= TOL
    if "image_features" in want:
        assert max_diff(got["image_features"], want["image_features"]) <= TOL


def test_intermediates_nlc_flattens_and_stop_early_runs_fewer_stages():
    model = _native("base-linear")
    images = sample_images(64)
    with torch.no_grad():
        nchw = model.visual.forward_intermediates(images, indices=[0])["image_intermediates"][0]
        nlc = model.visual.forward_intermediates(images, indices=[0], output_fmt="NLC")
    assert torch.equal(nlc["image_intermediates"][0], nchw.flatten(2).transpose(1, 2))
    calls: list[int] = []
    hooks = [b.register_forward_hook(lambda *_: calls.append(1)) for b in model.visual.blocks]
    with torch.no_grad():
        model.visual.forward_intermediates(
            images, indices=[0], stop_early=True, intermediates_only=True
        )
    for h in hooks:
        h.remove()
    assert len(calls) == 1  # stage 0 has one block; the other four blocks never ran


@pytest.mark.parametrize("name", sorted(TINY))
def test_open_clip_layout_round_trips_exactly(name):
    ref, config = _reference(name)
    state = ref.state_dict()
    native = to_native_state(state, "open_clip")
    assert set(native) == set(clipforge.create_model(config).state_dict())
    assert any(k.startswith("visual.trunk.stages.") for k in native)
    back = convnext_keys.FAMILY.from_native(native)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.slow  # full-size convnext_base_w written, read, compared and written back
def test_full_size_open_clip_directory_load_parity_and_save(tmp_path):
    """A hub directory as open_clip writes one (``open_clip_config.json`` naming the trunk):
    ``clipforge.load`` reads it (same embeddings), ``save(format="open_clip")`` writes it back."""
    from safetensors.torch import load_file, save_file

    ref = perturb_(open_clip.model.CLIP(**_full_size_cfg("convnext_base_w"))).eval()
    hub = tmp_path / "hub"
    hub.mkdir()
    cfg = open_clip.get_model_config("convnext_base_w")
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    state = ref.state_dict()
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(hub / "open_clip_model.safetensors")
    )
    model = clipforge.load(hub)
    assert model.config == get_config("convnext_base_w")
    images, tokens = sample_images(256), sample_tokens()
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    assert json.loads((out / "open_clip_config.json").read_text())["model_cfg"] == cfg
    back = load_file(str(out / "open_clip_model.safetensors"))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


def _full_size_cfg(name: str) -> dict:
    cfg = open_clip.get_model_config(name)
    return {"embed_dim": cfg["embed_dim"], "vision_cfg": cfg["vision_cfg"],
            "text_cfg": cfg["text_cfg"]}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext_large_d_320", "convnext_xxlarge"])
def test_full_size_matches_open_clip(name):
    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model(name)).eval()
    model = clipforge.create_model(name)
    model.load_state_dict(to_native_state(ref.state_dict(), "open_clip"), strict=True)
    model.eval()
    size = get_config(name).vision.image_size
    images, tokens = sample_images(size), sample_tokens()
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
        got = model.visual.forward_intermediates(images)["image_intermediates"]
        want = ref.visual.forward_intermediates(images)["image_intermediates"]
    assert all(max_diff(g, w) <= TOL for g, w in zip(got, want, strict=True))


# ----------------------------------------------------------------------------- architectures
def test_every_open_clip_convnext_has_an_architecture():
    assert [n for n in list_architectures() if n.startswith("convnext")] == sorted(CONVNEXT)


@pytest.mark.parametrize("name", tiered(CONVNEXT))
def test_parameter_counts_equal_open_clip_and_the_profile(name):
    import csv

    with torch.device("meta"):
        ours = clipforge.create_model(name)
    expected = open_clip_counts(name)
    assert ours.num_parameters() == expected
    assert count_parameters(get_config(name)) == expected
    with shared_path("reference", "model_profile.csv").open() as f:
        profile = {row["model"]: row for row in csv.DictReader(f)}[name]
    assert round(expected["image"] / 1e6, 2) == float(profile["image_mparams"])
    assert round(expected["total"] / 1e6, 2) == float(profile["mparams"])


@pytest.mark.parametrize("name", CONVNEXT)
def test_open_clip_model_cfg_converts_both_ways(name):
    theirs = open_clip.get_model_config(name)
    assert convnext_keys.config_to_native(theirs) == get_config(name)
    assert convnext_keys.config_from_native(get_config(name)) == theirs
    assert ClipConfig.from_dict(get_config(name).to_dict()) == get_config(name)


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="one entry per stage"):
        ConvNextVisionConfig(depths=(3, 3), dims=(8, 16, 32))
    with pytest.raises(ConfigError, match="stride 32"):
        ConvNextVisionConfig(image_size=100)
    with pytest.raises(ConfigError, match="head"):
        ClipConfig.from_dict({"embed_dim": 8, "vision": {"type": "convnext", "head": "mpl"}})
    odd = get_config("convnext_base").replace(vision=ConvNextVisionConfig(dims=(8, 16, 32, 64)))
    with pytest.raises(ConfigError, match="no timm ConvNeXt trunk"):
        convnext_keys.config_from_native(odd)
    cfg = open_clip.get_model_config("convnext_base")
    with pytest.raises(ConfigError, match="not a timm ConvNeXt trunk"):
        convnext_keys.config_to_native(
            {**cfg, "vision_cfg": {**cfg["vision_cfg"], "timm_model_name": "convnext_x"}}
        )
    with pytest.raises(ConfigError, match="timm_proj"):
        convnext_keys.config_to_native(
            {**cfg, "vision_cfg": {**cfg["vision_cfg"], "timm_pool": "abs_attn"}}
        )
    assert sorted(CONVNEXT_TRUNKS) == sorted(
        {open_clip.get_model_config(n)["vision_cfg"]["timm_model_name"] for n in CONVNEXT}
    )


# ----------------------------------------------------------------------------- Tower protocol
def test_lit_lock_keeps_the_last_blocks_pooled_norm_and_head():
    tower = _native("large_d-mlp").visual
    assert isinstance(tower, ConvNextTower) and len(tower.blocks) == 5
    tower.lock(1)
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("trunk.stages.3.blocks.0.", "trunk.head.", "head.")) for n in trainable
    )
    assert {"head.mlp.fc1.weight", "trunk.head.norm.weight"} <= trainable
    tower.lock(0)
    assert not any(p.requires_grad for p in tower.parameters())
    no_decay = tower.no_weight_decay()
    assert "trunk.stages.0.blocks.0.gamma" in no_decay and "head.mlp.fc1.weight" not in no_decay


def test_grad_checkpointing_gives_the_same_result_and_gradients():
    model = _native("base-linear").train()
    images = sample_images(64)
    plain = model.encode_image(images)
    plain.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.visual.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert all(s.grad_checkpointing for s in model.visual.stages)
    checkpointed = model.encode_image(images)
    checkpointed.sum().backward()
    assert max_diff(plain, checkpointed) <= TOL
    assert all(max_diff(p.grad, grads[n]) <= TOL for n, p in model.visual.named_parameters())
    with pytest.raises(ValueError, match="patch dropout"):
        model.visual.set_patch_dropout(0.5)


def _clip_vocab_model() -> clipforge.models.CLIP:
    _, config = _reference("base-linear")
    torch.manual_seed(0)
    text = TextConfig(**{**TEXT, "vocab_size": 49408})
    return perturb_(clipforge.create_model(config.replace(text=text))).eval()


def test_native_save_and_load_round_trip(tmp_path):
    model = _clip_vocab_model()
    clipforge.save(model, tmp_path / "convnext")
    loaded = clipforge.load(tmp_path / "convnext")
    assert loaded.config == model.config and isinstance(loaded.visual, ConvNextTower)
    images = sample_images(64)
    with torch.no_grad():
        assert max_diff(loaded.encode_image(images), model.encode_image(images)) == 0.0


def test_onnx_export_matches_pytorch(tmp_path):
    from clipforge.onnx import OnnxClip
    from clipforge.onnx.export import export_onnx

    model = _clip_vocab_model()
    export_onnx(model, tmp_path, tokens=True)
    pixels = sample_images(64, n=3)
    with torch.no_grad():
        want = model.encode_image(pixels).numpy()
        tokens = model.visual.forward_features(pixels).numpy()
    runtime = OnnxClip(tmp_path)
    assert abs(runtime.encode_image(pixels.numpy()) - want).max() <= TOL
    features, got_tokens = runtime.encode_image_tokens(pixels.numpy())
    assert got_tokens.shape == tokens.shape == (3, 4, 40)  # the last stage's 2x2 map
    assert abs(got_tokens - tokens).max() <= TOL and abs(features - want).max() <= TOL
