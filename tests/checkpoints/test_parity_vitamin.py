"""ViTamin CLIPs: clipforge's native tower reproduces open_clip's (timm ``vitamin_*`` trunk +
``TimmModel`` linear head) image and text embeddings and every block of
``forward_intermediates`` (≤ 1e-5, fp32, perturbed random weights: ViTamin-S full size,
reduced twins of the other trunk shapes), loads and saves open_clip's layout, has open_clip's
configs and pretrained entries, and implements the ``Tower`` protocol.

ViTamin has no BatchNorm (every norm is a LayerNorm), so perturbing the parameters covers
every statistic the towers use."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from functools import partial
from typing import Any

import open_clip
import pytest
import timm
import torch
from timm.layers import HybridEmbed
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from timm.models.vitamin import GeGluMlp, MbConvStages, VitCfg, VitConvCfg

import clipforge
from clipforge.checkpoints.formats import detect_state_format, to_native_state, vitamin_keys
from clipforge.checkpoints.pretrained import download_weights, get_pretrained, weights_location
from clipforge.configs import ClipConfig, ConfigError, TextConfig, get_config, list_architectures
from clipforge.configs.vitamin import VITAMIN_TRUNKS, ViTaminVisionConfig
from clipforge.lora import apply_lora, merge_lora
from clipforge.models import ViTaminTower

from ..conftest import fake_hub_snapshot, max_diff, perturb_, sample_images, sample_tokens

TOL = 1e-5
pytestmark = pytest.mark.parity
VITAMIN = [n for n in open_clip.list_models() if n.startswith("ViTamin")]
TEXT = {"context_length": 16, "vocab_size": 500, "width": 32, "heads": 2, "layers": 2}
#: reduced twins: (stem width, conv dims, conv depths, width, layers, heads, positions, size)
TINY = {
    "xl-like": (16, (16, 32), (1, 2), 64, 2, 2, False, 64),  # no positions (the XL trunks)
    "expand": (8, (16, 24), (2, 1), 48, 3, 3, True, 96),  # stem ≠ stage 0: shortcut conv
}
KWARGS = [
    {}, {"indices": 2}, {"indices": [0, -1], "stop_early": True},
    {"indices": [1], "stop_early": True, "intermediates_only": True},
    {"normalize_intermediates": True, "output_fmt": "NLC"}, {"output_extra_tokens": True},
]  # fmt: skip
TOKENS = sample_tokens()  # CLIP's context and vocabulary, for the full-size models
KWARG_IDS = ["every-block", "last-two", "list-stop-early", "only", "normalized-nlc", "extra"]


def _timm_name(name: str) -> str:
    return f"vitamin_clipforge_test_{name.replace('-', '_')}"


def _register_tiny_trunks() -> None:
    """Reduced ViTamin trunks registered in timm, so open_clip's ``TimmModel`` wraps them
    exactly as it wraps the real ``vitamin_*`` ones."""
    for name in TINY:
        if not timm.list_models(_timm_name(name)):
            build = partial(_tiny_trunk, name)
            build.__name__, build.__module__ = _timm_name(name), __name__  # type: ignore[attr-defined]
            register_model(build)


def _tiny_trunk(name: str, pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """A reduced trunk built as timm's ``_create_vitamin`` builds ``vitamin_*``: MbConvStages
    inside a projection-free HybridEmbed, GeGLU ViT without class token, average pool."""
    stem, dims, depths, width, layers, heads, pos, size = TINY[name]
    embed = VitCfg(embed_dim=(*dims, width), depths=(*depths, 1), stem_width=stem,
                   conv_cfg=VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6))  # fmt: skip
    hub = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
    trunk = VisionTransformer(
        img_size=size, embed_dim=width, depth=layers, num_heads=heads, patch_size=1,
        embed_layer=partial(HybridEmbed, backbone=MbConvStages(cfg=embed), proj=False),
        mlp_layer=GeGluMlp, mlp_ratio=2.0, class_token=False, global_pool="avg",
        pos_embed="learn" if pos else "none", **{k: v for k, v in kwargs.items() if k not in hub},
    )  # fmt: skip
    trunk.default_cfg = trunk.pretrained_cfg = {}
    return trunk


@functools.cache
def _reference(name: str) -> tuple[torch.nn.Module, ClipConfig]:
    """(Cached; tests only read it.) open_clip's model and clipforge's config: ViTamin-S
    full size, or a reduced twin (``CustomTextCLIP``, as every ViTamin config asks)."""
    torch.manual_seed(0)
    if name == "ViTamin-S":
        return perturb_(open_clip.create_model(name)).eval(), get_config(name)
    _register_tiny_trunks()
    stem, dims, depths, width, layers, heads, pos, size = TINY[name]
    vision = {"timm_model_name": _timm_name(name), "timm_pool": "", "timm_proj": "linear",
              "image_size": size}  # fmt: skip
    ref = open_clip.model.CustomTextCLIP(24, vision, TEXT)
    tower = ViTaminVisionConfig(
        image_size=size, width=width, layers=layers, heads=heads, stem_width=stem,
        conv_dims=dims, conv_depths=depths, pos_embed=pos,
    )  # fmt: skip
    return perturb_(ref).eval(), ClipConfig(24, tower, TextConfig(**TEXT))


def _load_into(config: ClipConfig, ref: torch.nn.Module) -> clipforge.models.CLIP:
    """clipforge's model of ``config`` holding ``ref``'s weights (open_clip's layout)."""
    model = clipforge.create_model(config)
    model.load_state_dict(to_native_state(ref.state_dict(), "open_clip"), strict=True)
    return model.eval()


def _native(name: str) -> clipforge.models.CLIP:
    ref, config = _reference(name)
    return _load_into(config, ref)


@functools.cache
def _native_in_eval(name: str) -> clipforge.models.CLIP:
    """(Cached for the tests that only run it in eval mode under no_grad.) ``_native``."""
    return _native(name)


def _embeddings(model, ref, images: torch.Tensor, tokens: torch.Tensor) -> list[list]:
    """Image and text embeddings of both models, ours first."""
    with torch.no_grad():
        return [[m.encode_image(images), m.encode_text(tokens)] for m in (model, ref)]


def _close(got: Any, want: Any) -> bool:
    """Same keys, lengths and shapes all the way down, every tensor within :data:`TOL`."""
    if isinstance(want, dict):
        return sorted(got) == sorted(want) and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, list | tuple):
        return len(got) == len(want) and all(map(_close, got, want))
    return got.shape == want.shape and max_diff(got, want) <= TOL


@pytest.mark.parametrize("name", ["ViTamin-S", *sorted(TINY)])
def test_embeddings_match_open_clip(name):
    ref, config = _reference(name)
    model, images = _native_in_eval(name), sample_images(config.vision.image_size)
    tokens = sample_tokens(config.text.context_length, config.text.vocab_size)
    assert _close(*_embeddings(model, ref, images, tokens))
    with torch.no_grad():  # per-token features: after the last block (timm's norm is Identity)
        features = [
            model.visual.forward_features(images),
            ref.visual.trunk.forward_features(images),
        ]
    assert _close(*features)


def test_position_free_trunk_runs_at_another_size_like_open_clip():
    """open_clip builds ``ViTamin-XL-384`` at 384 px but feeds it 256-px images (its
    ``image_size``): a trunk without positions gives the same features at any multiple of 16."""
    ref, _ = _reference("xl-like")
    model = _native("xl-like")
    images = sample_images(96)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL


#: every argument set on the twins; three on full-size ViTamin-S (~2 s each)
CASES = [(n, i) for n in sorted(TINY) for i in range(len(KWARGS))] + [
    ("ViTamin-S", i) for i in (0, 2, 4)
]


@pytest.mark.parametrize(
    ("name", "kwargs"), [pytest.param(n, KWARGS[i], id=f"{n}-{KWARG_IDS[i]}") for n, i in CASES]
)
def test_every_block_matches_open_clip_forward_intermediates(name, kwargs):
    ref, config = _reference(name)
    images = sample_images(config.vision.image_size)
    with torch.no_grad():
        got = _native_in_eval(name).visual.forward_intermediates(images, **kwargs)
        want = ref.visual.forward_intermediates(images, **kwargs)
    assert want["image_intermediates"] and _close(got, want)


def test_stop_early_runs_fewer_blocks():
    model = _native("expand")
    calls: list[int] = []
    hooks = [b.register_forward_hook(lambda *_: calls.append(1)) for b in model.visual.blocks]
    with torch.no_grad():
        model.visual.forward_intermediates(sample_images(96), indices=[0], stop_early=True)
    for h in hooks:
        h.remove()
    assert len(calls) == 1


@pytest.mark.parametrize("name", ["ViTamin-S", *sorted(TINY)])
def test_open_clip_layout_round_trips_exactly(name):
    ref, config = _reference(name)
    state = ref.state_dict()
    assert detect_state_format(state).name == "open_clip_vitamin"
    native = to_native_state(state, "open_clip")
    assert set(native) == set(clipforge.create_model(config).state_dict())
    assert "visual.transformer.resblocks.0.mlp.c_fc.weight" in native
    back = vitamin_keys.from_native(native)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(KeyError, match="only"):
        vitamin_keys.to_native({"visual.trunk.blocks.0.mlp.w0.bias": torch.zeros(2)})


# ----------------------------------------------------------------------------- architectures
def test_every_open_clip_vitamin_has_an_architecture():
    assert [n for n in list_architectures() if n.startswith("ViTamin")] == sorted(VITAMIN)
    assert sorted(VITAMIN_TRUNKS) == sorted(
        {open_clip.get_model_config(n)["vision_cfg"]["timm_model_name"] for n in VITAMIN}
    )


@pytest.mark.parametrize("name", VITAMIN)
def test_open_clip_model_cfg_converts_both_ways(name):
    theirs = copy.deepcopy(open_clip.get_model_config(name))
    ours = get_config(name)
    assert vitamin_keys.config_to_native(theirs) == ours
    assert ClipConfig.from_dict(ours.to_dict()) == ours
    back = vitamin_keys.config_from_native(ours)
    trunks = back["vision_cfg"].pop("timm_model_name"), theirs["vision_cfg"].pop("timm_model_name")
    assert back == theirs
    # the L2 trunks are timm's L trunks again, and ViTamin-XL-384 names the 384-px trunk
    # but sizes it 256 (XL trunks have no positions): those come back as the first trunk
    # with the same tower, under another name
    size = ours.vision.image_size
    same = [dataclasses.replace(VITAMIN_TRUNKS[t], image_size=size) for t in trunks]
    assert same[0] == same[1] == ours.vision
    assert trunks[0] == trunks[1] or name.startswith("ViTamin-L2") or name == "ViTamin-XL-384"


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="two MBConv stages"):
        ViTaminVisionConfig(conv_dims=(8, 16, 32))
    with pytest.raises(ConfigError, match="stride 16"):
        ViTaminVisionConfig(patch_size=14, image_size=224)
    with pytest.raises(ConfigError, match="multiple of 16"):
        ViTaminVisionConfig(image_size=200)
    cfg = open_clip.get_model_config("ViTamin-L-336")
    refused = [({"image_size": 224}, "positions for 336 px"), ({"timm_pool": "avg"}, "linear head"),
               ({"timm_model_name": "vitamin_x"}, "not a timm ViTamin trunk")]  # fmt: skip
    for override, match in refused:
        with pytest.raises(ConfigError, match=match):
            vitamin_keys.config_to_native({**cfg, "vision_cfg": {**cfg["vision_cfg"], **override}})
    odd = get_config("ViTamin-S")
    odd = odd.replace(vision=dataclasses.replace(odd.vision, layers=3))
    with pytest.raises(ConfigError, match="no timm ViTamin trunk"):
        vitamin_keys.config_from_native(odd)


# ----------------------------------------------------------------------------- pretrained
def test_pretrained_entries_name_the_release_file(tmp_path):
    """open_clip's ViTamin entries name a file (``org/repo/pytorch_model.bin``): the repo is
    fetched for it, its ``.safetensors`` twin first, from the cache without the network."""
    entry = get_pretrained("ViTamin-L", "datacomp1b")
    assert entry.hub_id == "jienengchen/ViTamin-L-224px/pytorch_model.bin"
    repo, files = weights_location(entry.hub_id)
    assert (repo, files) == ("jienengchen/ViTamin-L-224px",
                             ("pytorch_model.safetensors", "pytorch_model.bin"))  # fmt: skip
    plain = ("timm/x", ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
    assert weights_location("timm/x") == weights_location("timm/x/") == plain
    snapshot = fake_hub_snapshot(tmp_path, repo)
    torch.save({"x": torch.zeros(1)}, snapshot / "pytorch_model.bin")
    assert download_weights(entry, tmp_path).name == "pytorch_model.bin"
    (snapshot / "pytorch_model.safetensors").write_bytes(b"")
    assert download_weights(entry, tmp_path).name == "pytorch_model.safetensors"


# ----------------------------------------------------------------------------- Tower protocol
def _image_outputs_and_grads(model: clipforge.models.CLIP, images: torch.Tensor) -> list:
    features = model.encode_image(images)
    features.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.visual.named_parameters()}
    model.zero_grad()
    return [features, grads]


def test_grad_checkpointing_lit_and_lora():
    model, images = _native("expand").train(), sample_images(96)
    tower = model.visual
    assert isinstance(tower, ViTaminTower) and len(tower.blocks) == 3
    plain = _image_outputs_and_grads(model, images)
    model.set_grad_checkpointing(True)
    assert _close(_image_outputs_and_grads(model, images), plain)
    tower.lock(1)
    heads = ("transformer.resblocks.2.", "ln_post.", "proj.")
    assert {n.startswith(heads) for n, p in tower.named_parameters() if p.requires_grad} == {True}
    assert "pos_embed" in tower.no_weight_decay()
    with pytest.raises(ValueError, match="patch dropout"):
        tower.set_patch_dropout(0.5)
    model.eval()
    apply_lora(model, rank=2, towers=("image",))  # B starts at zero: the same model
    lora_b = [p for n, p in model.named_parameters() if n.endswith("lora_B")]
    assert len(lora_b) == 3 * 4  # in_proj, out_proj, c_fc (both GeGLU halves), c_proj
    with torch.no_grad():
        assert _close(model.encode_image(images), plain[0])
        torch.nn.utils.vector_to_parameters(
            torch.randn(sum(p.numel() for p in lora_b)) / 10, lora_b
        )
        adapted = model.encode_image(images)
        merge_lora(model)
        assert max_diff(adapted, plain[0]) > 1e-3 and _close(model.encode_image(images), adapted)


def test_native_directory_and_onnx_round_trip(tmp_path):
    from clipforge.onnx import OnnxClip
    from clipforge.onnx.export import export_onnx

    torch.manual_seed(0)
    config = _reference("expand")[1]
    config = config.replace(text=dataclasses.replace(config.text, vocab_size=49408))
    model, pixels = perturb_(clipforge.create_model(config)).eval(), sample_images(96, n=3)
    clipforge.save(model, tmp_path / "native")
    export_onnx(model, tmp_path / "onnx", tokens=True)
    loaded, runtime = clipforge.load(tmp_path / "native"), OnnxClip(tmp_path / "onnx")
    assert loaded.config == model.config and isinstance(loaded.visual, ViTaminTower)
    with torch.no_grad():
        want = [model.encode_image(pixels), model.visual.forward_features(pixels)]
        assert torch.equal(loaded.encode_image(pixels), want[0])
    got = [torch.from_numpy(a) for a in runtime.encode_image_tokens(pixels.numpy())]
    assert want[1].shape == (3, 36, 48) and _close(got, want)
    assert _close(torch.from_numpy(runtime.encode_image(pixels.numpy())), want[0])


# ----------------------------------------------------------------------------- full size (slow)
@pytest.mark.slow  # full-size ViTamin-S written as open_clip's hub directory, read, written back
def test_full_size_open_clip_directory_load_parity_and_save(tmp_path):
    from safetensors.torch import load_file, save_file

    ref, hub, cfg = _reference("ViTamin-S")[0], tmp_path / "hub", get_config("ViTamin-S")
    state, theirs = ref.state_dict(), open_clip.get_model_config("ViTamin-S")
    hub.mkdir()
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": theirs}))
    save_file({k: v.contiguous() for k, v in state.items()}, hub / "open_clip_model.safetensors")
    model = clipforge.load(hub)
    assert model.config == cfg and _close(*_embeddings(model, ref, sample_images(224), TOKENS))
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    assert json.loads((out / "open_clip_config.json").read_text())["model_cfg"] == theirs
    back = load_file(out / "open_clip_model.safetensors")
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.slow  # full-size ViTamin-S saved as its release (pytorch_model.bin), loaded by tag
def test_pretrained_entry_loads_offline_from_the_release_file(tmp_path):
    from .test_pretrained_families import _load_offline

    ref = _reference("ViTamin-S")[0]
    repo, files = weights_location(get_pretrained("ViTamin-S", "datacomp1b").hub_id)
    torch.save(ref.state_dict(), fake_hub_snapshot(tmp_path / "hub", repo) / files[-1])
    tokens = open_clip.get_tokenizer("ViTamin-S")(["a dog", "two cats"])
    got, want, printed = _load_offline(tmp_path, "ViTamin-S", "datacomp1b", ref, tokens)
    assert _close([got["image"], got["text"]], [want["image"], want["text"]])
    assert printed == ["gelu", "shortest", "bicubic", "0.48145466"]
    assert torch.equal(
        got["ids"], open_clip.get_tokenizer("ViTamin-S")(["A Dog, runs!", "two cats"])
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViTamin-B", "ViTamin-L-256", "ViTamin-XL-384"])
def test_full_size_matches_open_clip(name):
    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model(name)).eval()
    model, images = (
        _load_into(get_config(name), ref),
        sample_images(get_config(name).vision.image_size),
    )
    assert _close(*_embeddings(model, ref, images, TOKENS))
    with torch.no_grad():
        got, want = (m.visual.forward_intermediates(images, indices=3) for m in (model, ref))
    assert _close(got, want)
