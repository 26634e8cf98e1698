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
KWARG_IDS = ["every-block", "last-two", "list-stop-early", "only", "normalized-nlc", "extra"]


def _timm_name(name: str) -> str:
    return f"vitamin_clipforge_test_{name.replace('-', '_')}"


def _register_tiny_trunks() -> None:
    """Reduced ViTamin trunks registered in timm, built as timm's ``_create_vitamin`` builds
    ``vitamin_*`` (MbConvStages inside HybridEmbed, GeGLU ViT, average pool), so open_clip's
    ``TimmModel`` wraps them exactly as it wraps the real ones."""
    for name, (stem, dims, depths, width, layers, heads, pos, size) in TINY.items():
        timm_name = _timm_name(name)
        if timm_name in timm.list_models(timm_name):
            continue
        embed = VitCfg(embed_dim=(*dims, width), depths=(*depths, 1), stem_width=stem,
                       conv_cfg=VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6))  # fmt: skip
        sizes = dict(img_size=size, embed_dim=width, depth=layers, num_heads=heads,
                     pos_embed="learn" if pos else "none")  # fmt: skip

        def build(pretrained: bool = False, _embed=embed, _sizes=sizes, **kwargs):
            skip = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")  # hub plumbing
            model = VisionTransformer(
                embed_layer=partial(HybridEmbed, backbone=MbConvStages(cfg=_embed), proj=False),
                patch_size=1, mlp_layer=GeGluMlp, mlp_ratio=2.0, class_token=False,
                global_pool="avg", **_sizes, **{k: v for k, v in kwargs.items() if k not in skip},
            )  # fmt: skip
            model.default_cfg = model.pretrained_cfg = {}
            return model

        build.__name__ = timm_name
        register_model(build)


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


def _native(name: str) -> clipforge.models.CLIP:
    ref, config = _reference(name)
    model = clipforge.create_model(config)
    model.load_state_dict(to_native_state(ref.state_dict(), "open_clip"), strict=True)
    return model.eval()


@pytest.mark.parametrize("name", ["ViTamin-S", *sorted(TINY)])
def test_embeddings_match_open_clip(name):
    ref, config = _reference(name)
    model = _native(name)
    images = sample_images(config.vision.image_size)
    text = config.text
    tokens = sample_tokens(text.context_length, text.vocab_size)
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
        want = ref.visual.trunk.forward_features(images)
        assert max_diff(model.visual.forward_features(images), want) <= TOL


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
    with pytest.raises(ConfigError, match="positions for 336 px"):
        vitamin_keys.config_to_native(
            {**cfg, "vision_cfg": {**cfg["vision_cfg"], "image_size": 224}}
        )
    with pytest.raises(ConfigError, match="not a timm ViTamin trunk"):
        vitamin_keys.config_to_native(
            {**cfg, "vision_cfg": {**cfg["vision_cfg"], "timm_model_name": "vitamin_x"}}
        )
    with pytest.raises(ConfigError, match="linear head"):
        vitamin_keys.config_to_native(
            {**cfg, "vision_cfg": {**cfg["vision_cfg"], "timm_pool": "avg"}}
        )
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
def test_lit_lora_and_grad_checkpointing():
    model = _native("expand").train()
    tower = model.visual
    assert isinstance(tower, ViTaminTower) and len(tower.blocks) == 3
    images = sample_images(96)
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
    assert "pos_embed" in tower.no_weight_decay()
    with pytest.raises(ValueError, match="patch dropout"):
        tower.set_patch_dropout(0.5)
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


def test_native_save_load_and_onnx_export(tmp_path):
    from clipforge.onnx import OnnxClip
    from clipforge.onnx.export import export_onnx

    _, config = _reference("expand")
    config = config.replace(text=TextConfig(**{**TEXT, "vocab_size": 49408}))
    torch.manual_seed(0)
    model = perturb_(clipforge.create_model(config)).eval()
    clipforge.save(model, tmp_path / "saved")
    loaded = clipforge.load(tmp_path / "saved")
    assert loaded.config == model.config and isinstance(loaded.visual, ViTaminTower)
    pixels = sample_images(96, n=3)
    with torch.no_grad():
        want = model.encode_image(pixels)
        tokens = model.visual.forward_features(pixels).numpy()
        assert max_diff(loaded.encode_image(pixels), want) == 0.0
    export_onnx(model, tmp_path / "onnx", tokens=True)
    runtime = OnnxClip(tmp_path / "onnx")
    assert abs(runtime.encode_image(pixels.numpy()) - want.numpy()).max() <= TOL
    features, got_tokens = runtime.encode_image_tokens(pixels.numpy())
    assert got_tokens.shape == tokens.shape == (3, 36, 48)
    assert abs(got_tokens - tokens).max() <= TOL and abs(features - want.numpy()).max() <= TOL


# ----------------------------------------------------------------------------- full size (slow)
def _hub_dir(tmp_path, name: str, ref: torch.nn.Module):
    from safetensors.torch import save_file

    hub = tmp_path / "hub"
    hub.mkdir()
    cfg = open_clip.get_model_config(name)
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(hub / "open_clip_model.safetensors"))
    return hub, cfg, state


@pytest.mark.slow  # full-size ViTamin-S written as open_clip's hub directory, read, written back
def test_full_size_open_clip_directory_load_parity_and_save(tmp_path):
    from safetensors.torch import load_file

    ref, _ = _reference("ViTamin-S")
    hub, cfg, state = _hub_dir(tmp_path, "ViTamin-S", ref)
    model = clipforge.load(hub)
    assert model.config == get_config("ViTamin-S")
    images, tokens = sample_images(224), sample_tokens()
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    assert json.loads((out / "open_clip_config.json").read_text())["model_cfg"] == cfg
    back = load_file(str(out / "open_clip_model.safetensors"))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViTamin-B", "ViTamin-L-256", "ViTamin-XL-384"])
def test_full_size_matches_open_clip(name):
    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model(name)).eval()
    model = clipforge.create_model(name)
    model.load_state_dict(to_native_state(ref.state_dict(), "open_clip"), strict=True)
    model.eval()
    images, tokens = sample_images(get_config(name).vision.image_size), sample_tokens()
    with torch.no_grad():
        assert max_diff(model.encode_image(images), ref.encode_image(images)) <= TOL
        assert max_diff(model.encode_text(tokens), ref.encode_text(tokens)) <= TOL
        got = model.visual.forward_intermediates(images, indices=3)["image_intermediates"]
        want = ref.visual.forward_intermediates(images, indices=3)["image_intermediates"]
    assert all(max_diff(g, w) <= TOL for g, w in zip(got, want, strict=True))
