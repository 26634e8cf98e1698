"""Reduced twins of open_clip's MobileCLIP / MobileCLIP2 models and clipforge's, for the
parity, checkpoint, ONNX and tower tests."""

from __future__ import annotations

import copy
import dataclasses

import open_clip
import timm
import torch

import clipforge
from clipforge.checkpoints.formats import mobileclip_keys
from clipforge.configs import ClipConfig, TextConfig

from .conftest import max_diff, perturb_, sample_images, sample_tokens

TOL = 1e-5
#: reduced twins: (architecture whose structure they keep, timm trunk, sizes)
TWINS = {
    "MobileCLIP-S2": ("fastvit_mci2", dict(layers=(1, 1, 2, 1), embed_dims=(16, 32, 64, 128))),
    "MobileCLIP2-S0": ("fastvit_mci0", dict(layers=(1, 2, 1, 2), embed_dims=(16, 32, 64, 128))),
    "MobileCLIP2-S3": (
        "fastvit_mci3",
        dict(layers=(1, 1, 1, 1, 1), embed_dims=(16, 32, 64, 128, 256)),
    ),
    # the MCi stem fixes the width (768): only the depth shrinks
    "MobileCLIP-B": ("vit_base_mci_224", dict(layers=2)),
    "MobileCLIP2-L-14": ("vit_large_patch14_clip_224", dict(layers=2, width=64, heads=2)),
}
#: timm's keyword for each of clipforge's ViT config fields
_TIMM_VIT_KWARGS = {"layers": "depth", "width": "embed_dim", "heads": "num_heads"}
TEXT = dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)
EMBED, SIZE = 32, 64


def image_size(name: str) -> int:
    """The reduced twin's image size (a multiple of its patch size)."""
    return 56 if name == "MobileCLIP2-L-14" else SIZE


def reference(name: str) -> torch.nn.Module:
    """open_clip's model of ``name`` with a reduced trunk and text tower, weights perturbed."""
    trunk_name, sizes = TWINS[name]
    cfg = copy.deepcopy(open_clip.get_model_config(name))
    cfg.pop("custom_text")
    size = image_size(name)
    pool = cfg["vision_cfg"]["timm_pool"]
    stand_in = dict(timm_model_name="fastvit_t8", timm_pool="avg", image_size=size)
    cfg["vision_cfg"].update(stand_in)  # a small trunk, replaced below
    cfg["text_cfg"].update(TEXT)
    torch.manual_seed(0)
    ref = open_clip.model.CustomTextCLIP(EMBED, cfg["vision_cfg"], cfg["text_cfg"])
    # open_clip passes no depths/widths to timm: swap in the reduced trunk of the variant
    if trunk_name in mobileclip_keys.VIT_TRUNKS:
        kwargs = {_TIMM_VIT_KWARGS[k]: v for k, v in sizes.items()} | {"img_size": size}
    else:
        kwargs = dict(sizes)
    ref.visual.trunk = timm.create_model(trunk_name, num_classes=EMBED, global_pool=pool, **kwargs)
    return perturb_(ref).eval()


def tiny_mobileclip(name: str) -> clipforge.CLIP:
    """clipforge's model of the reduced twin of ``name`` (random weights)."""
    trunk_name, sizes = TWINS[name]
    full = clipforge.get_config(name)
    vision = mobileclip_keys.config_to_native(open_clip.get_model_config(name)).vision
    assert full.vision == vision
    vision = dataclasses.replace(vision, **sizes, image_size=image_size(name))
    text = TextConfig(**TEXT, causal=full.text.causal)
    return clipforge.create_model(ClipConfig(embed_dim=EMBED, vision=vision, text=text)).eval()


def loaded(name: str) -> tuple[torch.nn.Module, clipforge.CLIP]:
    ref = reference(name)
    ours = tiny_mobileclip(name)
    ours.load_state_dict(mobileclip_keys.to_native(ref.state_dict()))
    return ref, ours


def assert_same(ref: torch.nn.Module, ours: clipforge.CLIP, size: int | None = None) -> None:
    """Image and text embeddings equal ≤ ``TOL`` (images at the model's own size)."""
    images = sample_images(size or ours.config.vision.image_size)
    tokens = sample_tokens()
    with torch.no_grad():
        want_image, want_text = ref.encode_image(images), ref.encode_text(tokens)
        assert want_image.abs().max() > 1e-2  # the perturbed weights reach the output
        assert max_diff(ours.encode_image(images), want_image) <= TOL
        assert max_diff(ours.encode_text(tokens), want_text) <= TOL
