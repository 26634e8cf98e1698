"""EVA-CLIP: clipforge's native EVA tower reproduces open_clip's (timm ``Eva`` trunk) embeddings
(≤ 1e-5, fp32, random weights), the key mapping round-trips exactly, every EVA architecture
has open_clip's parameter counts, and the tower implements the whole ``Tower`` protocol."""

from __future__ import annotations

import csv
import dataclasses
import functools

import open_clip
import pytest
import timm
import torch
from open_clip.timm_model import TimmModel

import clipforge
from clipforge.checkpoints.formats import eva_keys
from clipforge.configs import ClipConfig, ConfigError, get_config, list_architectures
from clipforge.configs.eva import EvaVisionConfig
from clipforge.configs.param_counts import count_parameters
from clipforge.lora import apply_lora, merge_lora
from clipforge.models import EvaVisionTransformer

from ..conftest import max_diff, perturb_, sample_images, sample_tokens, shared_path, tiered

TOL = 1e-5
EVA = ["EVA01-g-14", "EVA01-g-14-plus", "EVA02-B-16", "EVA02-E-14", "EVA02-E-14-plus",
       "EVA02-L-14", "EVA02-L-14-336"]  # fmt: skip
TEXT = {"context_length": 16, "vocab_size": 500, "width": 32, "heads": 2, "layers": 2}
#: reduced-size variants of each timm trunk: (trunk, image size, timm size overrides)
TINY = {
    "eva02-rope-rescaled": ("eva02_base_patch16_clip_224", 64, {"embed_dim": 64, "depth": 3,
                            "num_heads": 4}),
    "eva02-336-grid": ("eva02_large_patch14_clip_336", 84, {"embed_dim": 96, "depth": 2,
                       "num_heads": 6}),
    "eva01-giant": ("eva_giant_patch14_224", 56, {"embed_dim": 88, "depth": 2, "num_heads": 4,
                    "mlp_ratio": 6144 / 1408}),
    "eva02-enormous-post-norm": ("eva02_enormous_patch14_clip_224", 56, {"embed_dim": 64,
                                 "depth": 3, "num_heads": 4, "mlp_ratio": 15360 / 1792}),
}  # fmt: skip


@functools.cache
def _tiny_reference(name: str) -> tuple[torch.nn.Module, ClipConfig]:
    """(Cached; tests only read it.) open_clip's ``CustomTextCLIP`` with a reduced timm EVA trunk (built as open_clip builds
    it: ``num_classes=embed_dim``, ``global_pool='token'``), and the matching clipforge config."""
    trunk_name, size, small = TINY[name]
    embed_dim = 24
    torch.manual_seed(0)
    ref = open_clip.model.CustomTextCLIP(
        embed_dim,
        {"image_size": size, "layers": 1, "width": 32, "patch_size": 14, "head_width": 32},
        TEXT,
    )
    with torch.device("meta"):  # open_clip's adapter around the full-size trunk...
        visual = TimmModel(trunk_name, embed_dim, image_size=size, pool="token", proj=None)
    visual.trunk = timm.create_model(  # ...which is swapped for a real, reduced one
        trunk_name, num_classes=embed_dim, global_pool="token", img_size=size, **small
    )
    ref.visual = visual
    assert not any(p.is_meta for p in ref.parameters())
    trunk = eva_keys.TRUNKS[trunk_name].config()
    vision = dataclasses.replace(
        trunk, image_size=size, width=small["embed_dim"], layers=small["depth"],
        heads=small["num_heads"], mlp_ratio=small.get("mlp_ratio", trunk.mlp_ratio),
    )  # fmt: skip
    return perturb_(ref).eval(), ClipConfig(embed_dim, vision, clipforge.configs.TextConfig(**TEXT))


def _native(ref: torch.nn.Module, config: ClipConfig) -> clipforge.models.CLIP:
    model = clipforge.create_model(config)
    model.load_state_dict(eva_keys.to_native(ref.state_dict()), strict=True)
    return model.eval()


def _check_parity(ref: torch.nn.Module, model: torch.nn.Module, size: int, text: dict) -> dict:
    images = sample_images(size)
    tokens = sample_tokens(text["context_length"], text["vocab_size"])
    with torch.no_grad():
        diffs = {
            "image": max_diff(model.encode_image(images), ref.encode_image(images)),
            "text": max_diff(model.encode_text(tokens), ref.encode_text(tokens)),
            "logit_scale": max_diff(model.logit_scale, ref.logit_scale),
        }
    assert all(d <= TOL for d in diffs.values()), diffs
    return diffs


@pytest.mark.parametrize("name", sorted(TINY))
def test_reduced_eva_matches_open_clip(name):
    ref, config = _tiny_reference(name)
    model = _native(ref, config)
    _check_parity(ref, model, config.vision.image_size, TEXT)
    images = sample_images(config.vision.image_size)
    with torch.no_grad():  # per-token features: timm's trunk after its final norm
        tokens = model.visual.forward_features(images)
        assert max_diff(tokens, ref.visual.trunk.forward_features(images)) <= TOL


@pytest.mark.parametrize("name", sorted(TINY))
def test_key_mapping_round_trips_exactly(name):
    ref, config = _tiny_reference(name)
    state = ref.state_dict()
    assert eva_keys.matches(state)
    native = eva_keys.to_native(state)
    assert not eva_keys.matches(native)
    assert set(native) == set(clipforge.create_model(config).state_dict())
    back = eva_keys.from_native(native)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_key_mapping_rejects_unknown_and_partial_keys():
    ref, _ = _tiny_reference("eva02-rope-rescaled")
    state = ref.state_dict()
    with pytest.raises(KeyError, match="no EVA mapping"):
        eva_keys.to_native({**state, "visual.trunk.blocks.0.attn.odd": torch.zeros(1)})
    partial = {k: v for k, v in state.items() if not k.endswith("blocks.1.attn.k_proj.weight")}
    with pytest.raises(KeyError, match="only some of the tensors"):
        eva_keys.to_native(partial)


@pytest.mark.slow
def test_full_size_eva02_b16_matches_open_clip(tmp_path):
    """Through real open_clip hub directories both ways: ``clipforge.load`` reads open_clip's
    EVA layout (registry family ``eva``), ``clipforge.save(format="open_clip")`` writes it."""
    import json

    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model("EVA02-B-16")).eval()
    cfg = open_clip.get_model_config("EVA02-B-16")
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
              str(hub / "open_clip_model.safetensors"))  # fmt: skip
    model = clipforge.load(hub)
    assert model.config == get_config("EVA02-B-16")
    _check_parity(ref, model, 224, cfg["text_cfg"])
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    assert json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["vision_cfg"][
        "timm_model_name"] == cfg["vision_cfg"]["timm_model_name"]  # fmt: skip
    back, state = load_file(str(out / "open_clip_model.safetensors")), ref.state_dict()
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


# ----------------------------------------------------------------------------- architectures
def _profile() -> dict[str, dict[str, str]]:
    with shared_path("reference", "model_profile.csv").open() as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def test_every_eva_release_has_an_architecture():
    assert [n for n in list_architectures() if n.startswith("EVA")] == EVA


@pytest.mark.parametrize("name", tiered(EVA))
def test_parameter_counts_equal_open_clip_and_the_profile(name):
    with torch.device("meta"):
        ours = clipforge.create_model(name)
        ref = open_clip.create_model(name, device="meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    expected = {"image": count(ref.visual), "text": count(ref.text), "total": count(ref)}
    assert ours.num_parameters() == expected
    assert count_parameters(get_config(name)) == expected  # the formula, without building
    profile = _profile()[name]
    for key, column in (("image", "image_mparams"), ("text", "text_mparams"), ("total", "mparams")):
        assert round(expected[key] / 1e6, 2) == float(profile[column]), key


@pytest.mark.parametrize("name", EVA)
def test_open_clip_model_cfg_converts_both_ways(name):
    theirs = open_clip.get_model_config(name)
    assert eva_keys.config_to_native(theirs) == get_config(name)
    assert eva_keys.config_from_native(get_config(name)) == theirs
    assert ClipConfig.from_dict(get_config(name).to_dict()) == get_config(name)


def test_configs_open_clip_cannot_build_are_refused():
    config = get_config("EVA02-B-16")
    odd = config.replace(vision=dataclasses.replace(config.vision, layers=5))
    with pytest.raises(ConfigError, match="no timm EVA-CLIP trunk"):
        eva_keys.config_from_native(odd)
    cfg = open_clip.get_model_config("EVA02-B-16")
    with pytest.raises(ConfigError, match="not a timm EVA-CLIP trunk"):
        eva_keys.config_to_native({**cfg, "vision_cfg": {**cfg["vision_cfg"],
                                                         "timm_model_name": "vit_base"}})  # fmt: skip
    with pytest.raises(ConfigError, match="not supported"):
        eva_keys.config_to_native({**cfg, "text_cfg": {**cfg["text_cfg"], "hf_model_name": "x"}})
    with pytest.raises(ConfigError, match="head width divisible by 4"):
        EvaVisionConfig(width=36, heads=6, rope=True)


# ----------------------------------------------------------------------------- Tower protocol
def _tiny_model(name: str = "eva02-rope-rescaled") -> clipforge.models.CLIP:
    ref, config = _tiny_reference(name)
    return _native(ref, config)


def test_tower_protocol_lock_decay_and_features():
    model = _tiny_model()
    tower = model.visual
    assert isinstance(tower, EvaVisionTransformer) and tower.output_dim == 24
    assert len(tower.blocks) == 3
    features = tower.forward_features(sample_images(64))
    assert features.shape == (2, 1 + 4 * 4, 64)
    no_decay = tower.no_weight_decay()
    assert {"positional_embedding", "class_embedding", "proj.bias"} <= no_decay
    assert "transformer.resblocks.0.attn.in_proj_weight" not in no_decay
    tower.lock(1)
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("transformer.resblocks.2.", "ln_post.", "proj."))
                             for n in trainable)  # fmt: skip
    assert "proj.weight" in trainable and "transformer.resblocks.1.ln_1.weight" not in trainable


@pytest.mark.parametrize("name", ["eva02-rope-rescaled", "eva02-enormous-post-norm"])
def test_grad_checkpointing_gives_the_same_result_and_gradients(name):
    model = _tiny_model(name).train()
    images = sample_images(model.visual.image_size)
    plain = model.encode_image(images)
    plain.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.visual.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert model.visual.transformer.grad_checkpointing
    checkpointed = model.encode_image(images)
    checkpointed.sum().backward()
    assert max_diff(plain, checkpointed) <= TOL
    assert all(max_diff(p.grad, grads[n]) <= TOL for n, p in model.visual.named_parameters())


def test_patch_dropout_keeps_the_class_token_and_rotary_positions():
    model = _tiny_model()
    tower = model.visual
    tower.set_patch_dropout(0.5)
    images = sample_images(64)
    with torch.no_grad():
        kept = tower.train().forward_features(images)
        assert kept.shape == (2, 1 + 8, 64)
        full = tower.eval().forward_features(images)
        assert full.shape == (2, 17, 64)  # eval ignores the rate
        tower.set_patch_dropout(0.0)
        tower.train()
        assert max_diff(tower.forward_features(images), full) <= TOL
    with pytest.raises(ValueError, match="patch dropout"):
        tower.set_patch_dropout(1.0)


def test_lora_adapts_eva_blocks_and_merges_back():
    model = _tiny_model()
    images = sample_images(64)
    with torch.no_grad():
        before = model.encode_image(images)
    apply_lora(model, rank=2, towers=("image",))
    adapted = [n for n, _ in model.named_parameters() if n.endswith("lora_A")]
    assert len(adapted) == 3 * 4  # in_proj, out_proj, c_fc, c_proj per block
    assert any(".mlp.c_fc." in n for n in adapted) and any("in_proj_weight" in n for n in adapted)
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
    assert set(model.state_dict()) == set(
        eva_keys.to_native(eva_keys.from_native(model.state_dict()))
    )


# ----------------------------------------------------------------------------- use
def _tiny_clip_vocab_model() -> clipforge.models.CLIP:
    """The reduced EVA-02 architecture with CLIP's vocabulary (for tokenizer-driven paths)."""
    _, config = _tiny_reference("eva02-rope-rescaled")
    config = config.replace(text=dataclasses.replace(config.text, vocab_size=49408))
    torch.manual_seed(0)
    return perturb_(clipforge.create_model(config)).eval()


def test_native_save_and_load_round_trip(tmp_path):
    model = _tiny_clip_vocab_model()
    clipforge.save(model, tmp_path / "eva")
    loaded = clipforge.load(tmp_path / "eva")
    assert loaded.config == model.config and isinstance(loaded.visual, EvaVisionTransformer)
    images = sample_images(64)
    with torch.no_grad():
        assert max_diff(loaded.encode_image(images), model.encode_image(images)) == 0.0


def test_onnx_export_matches_pytorch(tmp_path):
    from clipforge.onnx import OnnxClip
    from clipforge.onnx.export import export_onnx

    model = _tiny_clip_vocab_model()
    export_onnx(model, tmp_path)
    pixels = sample_images(64, n=3)  # export traced batch 2: the batch axis is dynamic
    with torch.no_grad():
        want = model.encode_image(pixels).numpy()
    got = OnnxClip(tmp_path).encode_image(pixels.numpy())
    assert abs(got - want).max() <= TOL


@pytest.mark.parametrize(("name", "tag"), [("EVA02-L-14-336", "merged2b_s6b_b61k")])
def test_default_preprocessing_is_the_release_pipeline(name, tag):
    """EVA-CLIP releases use CLIP's pipeline (OpenAI mean/std, bicubic, shortest side + centre
    crop): an EVA architecture's default preprocessing equals open_clip's for the release."""
    from PIL import Image

    pp = open_clip.get_pretrained_cfg(name, tag)
    size = get_config(name).vision.image_size
    reference = open_clip.image_transform(
        size, is_train=False, mean=pp["mean"], std=pp["std"],
        interpolation=pp["interpolation"], resize_mode=pp["resize_mode"],
    )  # fmt: skip
    with torch.device("meta"):
        model = clipforge.create_model(name)
    photos = sorted(shared_path("data", "photos").iterdir())
    assert photos
    for path in photos:
        image = Image.open(path).convert("RGB")
        assert max_diff(model.preprocess(image), reference(image)) <= 1e-6, path.name
