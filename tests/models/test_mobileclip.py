"""MobileCLIP / MobileCLIP2 architectures and the FastViT tower through clipforge's hooks:
parameter counts equal open_clip's, family defaults, ``forward_intermediates`` equal
open_clip's, LiT locking, gradient checkpointing, LoRA, ONNX export of the folded form,
``clipforge models`` and ``selfcheck``."""

from __future__ import annotations

import copy
import json

import numpy as np
import open_clip
import pytest
import torch
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.configs import ClipConfig, ConfigError, FastViTConfig, get_config, get_preprocess
from clipforge.configs.param_counts import count_parameters
from clipforge.lora import apply_lora, lora_parameters
from clipforge.onnx import OnnxClip, export_onnx
from clipforge.selfcheck import check_architecture

from ..conftest import max_diff, sample_images, sample_tokens
from ..mobileclip_helpers import SIZE, TOL, loaded, tiny_mobileclip

MOBILECLIP = [n for n in clipforge.list_architectures() if n.startswith("MobileCLIP")]
REQUIRED = {"MobileCLIP-S1", "MobileCLIP-S2", "MobileCLIP-B", "MobileCLIP2-S0", "MobileCLIP2-S2",
            "MobileCLIP2-S3", "MobileCLIP2-S4", "MobileCLIP2-B", "MobileCLIP2-L-14"}  # fmt: skip
FAST = {"MobileCLIP2-S0", "MobileCLIP-B"}


def _tiered(names):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _counts(model: torch.nn.Module) -> dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"image": count(model.visual), "text": count(model.text), "total": count(model)}


def test_every_release_has_an_architecture():
    assert set(MOBILECLIP) >= REQUIRED
    assert set(MOBILECLIP) <= set(open_clip.list_models())


@pytest.mark.parametrize("name", _tiered(MOBILECLIP))
def test_parameter_counts_and_text_mask_equal_open_clip(name):
    with torch.device("meta"):
        ours = clipforge.create_model(name)
        ref = open_clip.create_model(name, device="meta")
    assert ours.num_parameters() == _counts(ref)
    assert count_parameters(ours.config) == _counts(ref)  # the formula `models` prints
    no_mask = open_clip.get_model_config(name)["text_cfg"].get("no_causal_mask", False)
    assert ours.config.text.causal is not no_mask
    assert ours.config.text.context_length == ref.context_length


def test_family_preprocessing_is_declared_in_the_architecture():
    """MobileCLIP and MobileCLIP2-S0/S2 feed [0, 1] pixels (mean 0, std 1); S3/S4 OpenAI's
    statistics; all bilinear, shortest side (open_clip's _mccfg / _mc2cfg)."""
    assert tuple(get_preprocess("MobileCLIP-S2")["mean"]) == (0.0, 0.0, 0.0)
    assert tuple(get_preprocess("MobileCLIP2-S0")["std"]) == (1.0, 1.0, 1.0)
    assert get_preprocess("MobileCLIP2-S4")["mean"][0] == pytest.approx(0.48145466)
    model = clipforge.create_model("MobileCLIP2-S0", towers="text")
    pp = model.preprocess_config
    assert (pp.image_size, pp.interpolation, pp.resize_mode) == (256, "bilinear", "shortest")


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="vision.embed_dims lists 3 stages, layers lists 4"):
        FastViTConfig(embed_dims=(64, 128, 256))
    with pytest.raises(ConfigError, match=r"embed_dims\[3\] 520 is not divisible by head_dim"):
        FastViTConfig(embed_dims=(64, 128, 256, 520))
    with pytest.raises(ConfigError, match=r"embed_dims\[2\] 250 is not a multiple"):
        FastViTConfig(embed_dims=(64, 128, 250, 512))
    with pytest.raises(ConfigError, match="vision.token_mixers"):
        ClipConfig.from_dict({**get_config("MobileCLIP2-S0").to_dict(),
                              "vision": {"type": "fastvit", "token_mixers": ["conv"] * 4}})  # fmt: skip


@pytest.mark.parity
@pytest.mark.parametrize("fmt", ["NCHW", "NLC"])
@pytest.mark.parametrize("name", ["MobileCLIP-B", "MobileCLIP2-L-14"])
def test_vit_intermediates_equal_open_clip(name, fmt):
    """Block outputs (class token as the prefix), normalised ones, and the features."""
    ref, ours = loaded(name)
    images = sample_images(ours.config.vision.image_size)
    kwargs = dict(image=images, image_indices=[0, -1], image_output_fmt=fmt,
                  image_output_extra_tokens=True, normalize_intermediates=True)  # fmt: skip
    with torch.no_grad():
        want, got = ref.forward_intermediates(**kwargs), ours.forward_intermediates(**kwargs)
    for key in ("image_intermediates", "image_intermediates_prefix"):
        assert len(got[key]) == len(want[key]) == 2
        for a, b in zip(got[key], want[key], strict=True):
            assert a.shape == b.shape and max_diff(a, b) <= TOL
    assert max_diff(got["image_features"], want["image_features"]) <= TOL


def test_lora_adapts_the_vit_image_tower():
    model = tiny_mobileclip("MobileCLIP-B")
    apply_lora(model, rank=2, towers=("image", "text"))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("visual.transformer.resblocks.1.") for n in names)


@pytest.mark.parity
@pytest.mark.parametrize("indices", [None, 2, [0, -1]])
def test_intermediates_equal_open_clip(indices):
    """Stage outputs (timm's semantics: one per stage, NCHW) and the features of one pass."""
    ref, ours = loaded("MobileCLIP2-S0")
    images = sample_images(SIZE)
    with torch.no_grad():
        want = ref.forward_intermediates(image=images, image_indices=indices)
        got = ours.forward_intermediates(image=images, image_indices=indices)
        assert len(got["image_intermediates"]) == len(want["image_intermediates"])
        for a, b in zip(got["image_intermediates"], want["image_intermediates"], strict=True):
            assert a.shape == b.shape and max_diff(a, b) <= TOL
        assert max_diff(got["image_features"], want["image_features"]) <= TOL
        ours.reparameterize()
        folded = ours.forward_intermediates(image=images, image_indices=indices)
        assert max_diff(folded["image_features"], want["image_features"]) <= TOL
        nlc = ours.forward_intermediates(image=images, image_output_fmt="NLC")
        assert nlc["image_intermediates"][-1].shape == (2, 4, 128)  # 2x2 map of 128 channels


def test_lock_keeps_the_last_blocks_and_head_trainable():
    tower = tiny_mobileclip("MobileCLIP2-S0").tower("image")
    tower.lock(1)
    trainable = {n.split(".")[0] for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable == {"stages", "final_conv", "head"}
    last = tower.blocks[-1]
    assert all(p.requires_grad for p in last.parameters())
    assert not any(p.requires_grad for p in tower.blocks[-2].parameters())
    assert not any(p.requires_grad for p in tower.stem.parameters())


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_mobileclip("MobileCLIP-S2").train()
    pixels = sample_images(SIZE)

    def grads(enable: bool) -> list[torch.Tensor]:
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model.encode_image(pixels).square().sum().backward()
        return [p.grad.clone() for p in model.tower("image").parameters()]

    plain, checkpointed = grads(False), grads(True)
    assert any(g.abs().max() > 0 for g in plain)
    for a, b in zip(plain, checkpointed, strict=True):
        assert max_diff(a, b) <= 1e-5 * max(1.0, a.abs().max().item())


def test_lora_adapts_the_text_tower_and_refuses_the_convolutional_image_tower():
    model = tiny_mobileclip("MobileCLIP2-S0")
    with pytest.raises(clipforge.errors.UsageError, match="FastViT"):
        apply_lora(model, rank=2, towers=("image",))
    apply_lora(model, rank=2, towers=("text",))
    assert len(list(lora_parameters(model))) > 0


def test_onnx_export_is_the_folded_model(tmp_path):
    """The bundle holds the folded image tower (fewer convolutions, same outputs ≤ 1e-5), the
    caller's model stays in training form, and the runtime feeds the non-causal text tower
    its padding (no trimming)."""
    _, model = loaded("MobileCLIP2-S0")
    export_onnx(model, tmp_path / "onnx")
    assert model.tower("image").can_reparameterize  # the caller's model is untouched
    runtime = OnnxClip(tmp_path / "onnx")
    meta = json.loads((tmp_path / "onnx" / "clipforge_onnx.json").read_text())
    assert meta["text_input"] == {"pooling": "eot_full", "eot_token_id": None}
    pixels = sample_images(SIZE, 3)
    tokens = sample_tokens()[:3]
    with torch.no_grad():
        want_image, want_text = model.encode_image(pixels), model.encode_text(tokens)
    assert np.abs(runtime.encode_image(pixels.numpy()) - want_image.numpy()).max() <= TOL
    assert np.abs(runtime.encode_text(tokens.numpy()) - want_text.numpy()).max() <= TOL
    import onnx

    graph = onnx.load(str(tmp_path / "onnx" / "image_encoder.onnx")).graph
    convs = sum(node.op_type == "Conv" for node in graph.node)
    count = lambda m: sum(isinstance(c, torch.nn.Conv2d) for c in m.modules())  # noqa: E731
    unfolded = count(model.tower("image"))
    assert convs == count(copy.deepcopy(model).reparameterize().tower("image")) < unfolded


def test_models_cli_lists_them():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) >= REQUIRED
    assert rows["MobileCLIP2-S0"]["total_params"] == 74_835_073  # open_clip's count
    assert rows["MobileCLIP2-S0"]["image_size"] == 256


@pytest.mark.slow  # the full-size MobileCLIP2-S0 (75 M parameters)
def test_selfcheck_builds_and_runs_mobileclip():
    check = check_architecture("MobileCLIP2-S0")
    assert check.parameters["total"] == 74_835_073 and check.embed_dim == 512
    result = CliRunner().invoke(app, ["selfcheck", "MobileCLIP2-S0"])
    assert result.exit_code == 0 and "all 1 architectures built and ran" in result.output


def test_selfcheck_runs_a_reduced_mobileclip():
    name = clipforge.register_architecture(
        tiny_mobileclip("MobileCLIP2-S3").config.to_dict(), name="selfcheck-mobileclip-tiny",
        replace=True,
    )  # fmt: skip
    check = check_architecture(name)
    assert check.embed_dim == 32 and -1.0 <= check.cosine <= 1.0
