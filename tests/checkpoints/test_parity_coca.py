"""CoCa: clipforge's native CoCa reproduces open_clip's ``CoCa`` (image and text embeddings,
decoder logits, per-block intermediates; ≤ 1e-5, fp32, perturbed random weights) loaded from
an open_clip hub directory, and saves back to open_clip's layout exactly.

The references are open_clip's ``coca_ViT-B-32`` layout at reduced sizes (with the
attentional pooler, once with a pooler as wide as the image tower so ``nn.MultiheadAttention``
fuses its projections) and ``coca_base``'s (no pooler: class token and patch tokens)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from open_clip.coca_model import CoCa as OpenClipCoCa
from safetensors.torch import load_file, save_file

import clipforge
from clipforge.checkpoints.formats import coca_keys
from clipforge.models import CoCa

from ..conftest import max_diff, perturb_, sample_images, sample_tokens

pytestmark = pytest.mark.parity

TOL = 1e-5
TEXT = {"context_length": 12, "vocab_size": 64, "width": 32, "heads": 4, "layers": 2,
        "embed_cls": True, "output_tokens": True}  # fmt: skip
DECODER = {"context_length": 12, "vocab_size": 64, "width": 32, "heads": 4, "layers": 2}
VISION = {"image_size": 32, "patch_size": 8, "layers": 2, "head_width": 16, "output_tokens": True}
#: reduced open_clip CoCa model_cfgs: the B-32 / L-14 layout (attentional pooler) and coca_base's
TINY: dict[str, dict] = {
    "attn-pool": {"width": 48, "attentional_pool": True, "attn_pooler_heads": 4,
                  "attn_pooler_queries": 9},
    "attn-pool-fused": {"width": 32, "attentional_pool": True, "attn_pooler_heads": 2,
                        "attn_pooler_queries": 5},
    "class-token": {"width": 32},
}  # fmt: skip


def model_cfg(name: str) -> dict:
    """An open_clip CoCa ``model_cfg`` at reduced sizes."""
    vision = {**VISION, **TINY[name]}
    return {"embed_dim": 32, "vision_cfg": vision, "text_cfg": TEXT, "multimodal_cfg": DECODER,
            "custom_text": True}  # fmt: skip


@functools.cache
def reference(name: str) -> OpenClipCoCa:
    """(Cached; tests only read it.) open_clip's CoCa of ``model_cfg(name)``, perturbed (its
    decoder's ``text_projection`` is left uninitialised by open_clip: set here first)."""
    torch.manual_seed(0)
    cfg = {k: v for k, v in model_cfg(name).items() if k != "custom_text"}
    ref = OpenClipCoCa(**cfg)
    torch.nn.init.normal_(ref.text_decoder.text_projection, std=DECODER["width"] ** -0.5)
    perturb_(ref)
    return ref.eval()


def write_hub(name: str, directory: Path) -> Path:
    """An open_clip hub directory (config + safetensors) of ``reference(name)``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg(name)}))
    state = {k: v.contiguous() for k, v in reference(name).state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    return directory


@pytest.mark.parametrize("name", sorted(TINY))
def test_coca_embeddings_and_decoder_logits_match_open_clip(name, tmp_path):
    ref = reference(name)
    model = clipforge.load(write_hub(name, tmp_path / "hub"))
    assert isinstance(model, CoCa)
    images, tokens = sample_images(32, n=4), sample_tokens(12, 64)
    with torch.no_grad():
        expected = ref(images, tokens)
        got = model.caption_logits(images, tokens)
        diffs = {
            "image": max_diff(model.encode_image(images, normalize=True), ref.encode_image(images)),
            "text": max_diff(model.encode_text(tokens, normalize=True), ref.encode_text(tokens)),
            "logits": max_diff(got["logits"], expected["logits"]),
            "features": max_diff(got["image_features"], expected["image_features"]),
        }
    assert torch.equal(got["labels"], expected["labels"])
    assert got["logits"].shape == (4, 11, 64)
    assert all(d <= TOL for d in diffs.values()), diffs


@pytest.mark.parametrize("name", ["attn-pool", "class-token"])
def test_coca_forward_intermediates_match_open_clip(name):
    ref = reference(name)
    model = CoCa(coca_keys.config_to_native(model_cfg(name))).eval()
    model.load_state_dict(coca_keys.to_native(ref.state_dict()), strict=True)
    images, tokens = sample_images(32, n=4), sample_tokens(12, 64)
    kwargs: dict[str, Any] = dict(image=images, text=tokens, image_indices=[0, -1],
                                  text_indices=2, image_output_extra_tokens=True,
                                  text_output_extra_tokens=True)  # fmt: skip
    with torch.no_grad():
        ours = model.forward_intermediates(**kwargs)
        theirs = ref.forward_intermediates(**kwargs)
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        mine = ours[key]
        pairs = zip(mine, value, strict=True) if isinstance(value, list) else [(mine, value)]
        for a, b in pairs:
            assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
            assert a.shape == b.shape and max_diff(a, b) <= TOL, key


def test_coca_saves_open_clip_layout_exactly(tmp_path):
    model = clipforge.load(write_hub("attn-pool", tmp_path / "hub"))
    out = clipforge.save(model, tmp_path / "saved", format="open_clip")
    saved = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]
    assert coca_keys.config_to_native(saved) == model.config
    back, state = load_file(str(out / "open_clip_model.safetensors")), reference("attn-pool").state_dict()
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    again = clipforge.load(out)
    assert isinstance(again, CoCa) and again.config == model.config


def test_bare_coca_state_dict_is_detected(tmp_path):
    path = tmp_path / "coca.safetensors"
    save_file({k: v.contiguous() for k, v in reference("class-token").state_dict().items()}, str(path))
    config = coca_keys.config_to_native(model_cfg("class-token"))
    model = clipforge.load(config, weights=path)
    tokens = sample_tokens(12, 64)
    with torch.no_grad():
        assert max_diff(model.encode_text(tokens, normalize=True),
                        reference("class-token").encode_text(tokens)) <= TOL  # fmt: skip
