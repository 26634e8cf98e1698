"""clipforge's SigLIP towers reproduce open_clip's SigLIP models (≤ 1e-5, fp32, random weights).

open_clip builds SigLIP as ``CustomTextCLIP``: a timm ViT trunk (no class token, MAP head)
and a bidirectional text transformer. Reduced variants keep each release's structure
(patch size, MLP ratio, activations, text projection, widths) at a small width and depth;
the full-size ViT-B-16-SigLIP and ViT-B-16-SigLIP2 run in the slow tier.
"""

from __future__ import annotations

import open_clip
import pytest
import timm
import torch

import clipforge
from clipforge.checkpoints.formats import siglip_keys
from clipforge.configs import ClipConfig

from ..conftest import max_diff, perturb_, sample_images

TOL = 1e-5
#: reduced variants: (release it shrinks, timm trunk, vision spec, text spec, embed_dim)
REDUCED = {
    # SigLIP ViT-B/16: exact GELU in both towers
    "B-16": ("vit_base_patch16_siglip_224", dict(size=64, width=64, heads=4), {}, 64),
    # SigLIP 2 ViT-B/32: tanh-GELU in both towers
    "B-32-v2": (
        "vit_base_patch32_siglip_256",
        dict(size=64, width=64, heads=4),
        dict(act="tanh"),
        64,
    ),
    # SO400M/14 at 384 px: the grid drops the remainder; MLP ratio 3.7362
    "SO400M-14-384": (
        "vit_so400m_patch14_siglip_384",
        dict(size=60, width=64, heads=4, mlp_ratio=3.7362),
        dict(mlp_ratio=3.7362),
        64,
    ),
    # SO400M/16 i18n: tanh-GELU image tower, text tower without projection
    "SO400M-16-i18n": (
        "vit_so400m_patch16_siglip_256",
        dict(size=64, width=64, heads=4, mlp_ratio=3.7362),
        dict(mlp_ratio=3.7362, proj="none"),
        64,
    ),
    # gopt/16 SigLIP 2: the image width (embed_dim) differs from the text width
    "gopt-16-v2": ("vit_giantopt_patch16_siglip_256", dict(size=32, width=96, heads=4), {}, 96),
}
TEXT = dict(context_length=16, vocab_size=1000, width=64, heads=4, layers=2)


def _open_clip_text_cfg(spec: dict) -> dict:
    cfg = {**TEXT, "no_causal_mask": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}
    cfg["mlp_ratio"] = spec.get("mlp_ratio", 4.0)
    if spec.get("act") == "tanh":
        cfg["act_kwargs"] = {"approximate": "tanh"}
    if spec.get("proj") == "none":
        cfg["proj_type"] = "none"
    else:
        cfg["proj_bias"] = True
    return cfg


def _reference(name: str) -> torch.nn.Module:
    """open_clip's CustomTextCLIP with a depth-2, narrow timm SigLIP trunk of ``name``'s kind."""
    trunk_name, vision, text, embed_dim = REDUCED[name]
    torch.manual_seed(0)
    # open_clip passes no depth/width to timm: build it around a small stand-in trunk, then
    # swap in the reduced SigLIP trunk (its forward is trunk then an empty head either way)
    small_trunk = {"timm_model_name": "vit_tiny_patch16_224", "timm_pool": "map"}
    ref = open_clip.model.CustomTextCLIP(
        embed_dim,
        {**small_trunk, "timm_proj": "none", "image_size": vision["size"]},
        _open_clip_text_cfg(text),
        init_logit_bias=-10.0,
    )
    ref.visual.trunk = timm.create_model(
        trunk_name,
        pretrained=False,
        num_classes=0,
        img_size=vision["size"],
        embed_dim=vision["width"],
        num_heads=vision["heads"],
        depth=2,
    )
    perturb_(ref)
    _sharpen_(ref.visual)  # the text tower's activations are exercised as it is
    return ref.eval()


def _sharpen_(model: torch.nn.Module, gain: float = 4.0) -> None:
    """Scale every LayerNorm gain so MLP inputs are of order 1, where GELU's exact and tanh
    forms differ by more than the tolerance (with small random weights they do not)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.mul_(gain)


def _native_config(name: str) -> ClipConfig:
    """The same reduced model as a clipforge architecture."""
    trunk_name, vision, text, embed_dim = REDUCED[name]
    patch = int(trunk_name.split("patch")[1].split("_")[0])
    tanh_image = trunk_name in TANH_TRUNKS
    return ClipConfig.from_dict({
        "embed_dim": embed_dim, "norm_eps": 1e-6, "init_logit_bias": -10.0,
        "vision": {
            "type": "siglip_vit", "image_size": vision["size"], "patch_size": patch,
            "width": vision["width"], "heads": vision["heads"], "layers": 2,
            "mlp_ratio": vision.get("mlp_ratio", 4.0),
            "activation": "gelu_tanh" if tanh_image else "gelu",
        },
        "text": {
            "type": "siglip_text", **TEXT, "mlp_ratio": text.get("mlp_ratio", 4.0),
            "activation": "gelu_tanh" if text.get("act") == "tanh" else "gelu",
            "proj": text.get("proj", "linear"),
        },
    })  # fmt: skip


TANH_TRUNKS = {
    "vit_base_patch32_siglip_256",
    "vit_so400m_patch16_siglip_256",
    "vit_giantopt_patch16_siglip_256",
}


def _tokens(context_length: int, vocab_size: int) -> torch.Tensor:
    """Random ids over the whole vocabulary, with pad-like runs of one id at the end."""
    gen = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, vocab_size, (3, context_length), generator=gen)
    tokens[1, 5:] = 1
    tokens[2, context_length // 2 :] = vocab_size - 1
    return tokens


def _compare(ref: torch.nn.Module, model: clipforge.CLIP, size: int) -> dict[str, float]:
    images = sample_images(size)
    tokens = _tokens(model.config.text.context_length, model.config.text.vocab_size)
    with torch.no_grad():
        return {
            "image": max_diff(model.encode_image(images), ref.encode_image(images)),
            "text": max_diff(model.encode_text(tokens), ref.encode_text(tokens)),
            "logit_scale": abs(model.logit_scale.item() - ref.logit_scale.item()),
            "logit_bias": abs(model.logit_bias.item() - ref.logit_bias.item()),
        }


def _round_trip(ref: torch.nn.Module, model: clipforge.CLIP) -> None:
    back = siglip_keys.from_native(model.state_dict())
    expected = ref.state_dict()
    assert list(back) == list(expected)
    for key, value in expected.items():
        assert torch.equal(back[key], value), key
    ref.load_state_dict(back)  # strict: every key and shape is open_clip's


@pytest.mark.parametrize("name", sorted(REDUCED))
def test_reduced_siglip_matches_open_clip(name):
    ref = _reference(name)
    state = ref.state_dict()
    assert siglip_keys.matches(state)
    model = clipforge.create_model(_native_config(name)).eval()
    model.load_state_dict(siglip_keys.to_native(state))
    diffs = _compare(ref, model, REDUCED[name][1]["size"])
    assert max(diffs.values()) <= TOL, diffs
    assert model.num_parameters()["total"] == sum(p.numel() for p in ref.parameters())
    _round_trip(ref, model)


def test_the_bias_reaches_the_sigmoid_loss():
    """A SigLIP model trains its own ``logit_bias`` through the training wrapper."""
    from clipforge.losses import SigLipLoss
    from clipforge.train.gradcache import ContrastiveModel, contrastive_loss

    model = clipforge.create_model(_native_config("B-16"))
    wrapper = ContrastiveModel(model, init_bias=-10.0)
    assert wrapper.logit_bias is None  # the model's own bias is used, not a second one
    tokens = _tokens(16, 1000)[:2]
    loss = contrastive_loss(SigLipLoss(gather=False), *wrapper(sample_images(64), tokens))
    loss.backward()
    assert model.logit_bias.grad is not None and model.logit_bias.grad.abs() > 0
    assert ContrastiveModel(model)(sample_images(64), tokens)[3] is None  # CLIP loss: no bias


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2"])
def test_full_size_matches_open_clip(name, tmp_path):
    """Through a real open_clip hub directory: ``clipforge.load`` picks the SigLIP family of
    the open_clip format, and ``save(format="open_clip")`` writes open_clip's layout back."""
    import json

    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    ref = perturb_(open_clip.create_model(name)).eval()
    hub = tmp_path / "hub"
    hub.mkdir()
    model_cfg = open_clip.get_model_config(name)
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
              str(hub / "open_clip_model.safetensors"))  # fmt: skip
    model = clipforge.load(hub)
    assert model.config == clipforge.get_config(name)
    diffs = _compare(ref, model, model.config.vision.image_size)
    assert max(diffs.values()) <= TOL, diffs
    _round_trip(ref, model)
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    back, state = load_file(str(out / "open_clip_model.safetensors")), ref.state_dict()
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
