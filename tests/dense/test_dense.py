"""Dense heat maps: method paths equal hand computations, shapes and ranges, unsupported
towers, localisation scores, the procedural renderer's boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clipforge
from clipforge.configs import ClipConfig, ResNetConfig, TextConfig
from clipforge.data.procedural import (
    COLOURS,
    ObjectSpec,
    SceneSpec,
    render_scene,
    render_scene_with_boxes,
)
from clipforge.dense import (
    DEFAULT_METHOD,
    METHODS,
    chance,
    last_block_input,
    patch_tokens,
    pointing_hit,
    threshold_iou,
    vit_parts,
)
from clipforge.dense.methods import clearclip, maskclip, plain
from clipforge.errors import ConfigError, UsageError
from tests.conftest import sample_images, tiny_model
from tests.family_helpers import TINY_SIGLIP, tiny_eva

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _texts(model, n: int = 3) -> torch.Tensor:
    return F.normalize(torch.randn(n, model.config.embed_dim, generator=torch.Generator()
                                   .manual_seed(1)), dim=-1)  # fmt: skip


def _image(h: int = 37, w: int = 53) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize("method", list(METHODS))
def test_maps_have_the_image_size_and_unit_range(model, method):
    result = clipforge.heatmap(model, _image(), ["a dog", "a cat"], method=method)
    assert result.maps.shape == (2, 37, 53) and result.maps.dtype == np.float32
    assert result.maps.min() == pytest.approx(0.0) and result.maps.max() == pytest.approx(1.0)
    assert result.grid.shape == (2, 4, 4)  # 32-px input, 8-px patches
    if method == "gradcam":
        assert (result.grid >= 0).all()
    else:
        assert np.abs(result.grid).max() <= 1.0 + 1e-6  # cosines


def test_plain_patch_tokens_match_the_towers_full_forward(model):
    pixels = sample_images(32)
    tower = model.visual
    manual = tower.forward_features(pixels)[:, 1:] @ tower.proj  # tower's own code path
    assert torch.allclose(patch_tokens(model, pixels), manual, atol=1e-5)
    parts = vit_parts(model)
    pooled = parts.pool(parts.last_block(last_block_input(parts, pixels)))
    assert torch.allclose(pooled, model.encode_image(pixels), atol=1e-5)


def test_maskclip_is_the_value_path_by_hand(model):
    parts, pixels, texts = vit_parts(model), sample_images(32), _texts(model)
    x = last_block_input(parts, pixels)
    block, tower, width = parts.last_block, model.visual, x.shape[-1]
    h = F.layer_norm(x[:, 1:], (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    v = h @ block.attn.in_proj_weight[2 * width :].T + block.attn.in_proj_bias[2 * width :]
    o = v @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
    e = F.layer_norm(o, (width,), tower.ln_post.weight, tower.ln_post.bias, tower.ln_post.eps)
    cos = F.normalize(e @ tower.proj, dim=-1) @ texts.T  # (N, 16, T)
    expected = cos.transpose(1, 2).reshape(2, 3, 4, 4)
    with torch.no_grad():
        got = maskclip(parts, x, texts)
        assert torch.allclose(got, expected, atol=1e-5)
        assert not torch.allclose(plain(parts, x, texts), expected, atol=1e-3)


def test_clearclip_is_query_query_attention_without_residual_or_ffn(model):
    parts, pixels, texts = vit_parts(model), sample_images(32), _texts(model)
    x = last_block_input(parts, pixels)
    block, tower, width = parts.last_block, model.visual, x.shape[-1]
    heads, d = block.attn.heads, width // block.attn.heads
    qkv = block.ln_1(x) @ block.attn.in_proj_weight.T + block.attn.in_proj_bias
    q, v = qkv[..., :width], qkv[..., 2 * width :]
    outs = []
    for i in range(heads):
        qi, vi = q[..., i * d : (i + 1) * d], v[..., i * d : (i + 1) * d]
        outs.append(torch.softmax(qi @ qi.transpose(1, 2) / d**0.5, dim=-1) @ vi)
    o = block.attn.out_proj(torch.cat(outs, dim=-1))[:, 1:]
    cos = F.normalize(tower.ln_post(o) @ tower.proj, dim=-1) @ texts.T
    with torch.no_grad():
        got = clearclip(parts, x, texts)
    assert torch.allclose(got, cos.transpose(1, 2).reshape(2, 3, 4, 4), atol=1e-5)


def test_siglip_tower_pools_like_its_forward_and_maps_every_method():
    torch.manual_seed(0)
    model = clipforge.create_model(ClipConfig.from_dict(TINY_SIGLIP)).eval()
    parts, pixels, texts = vit_parts(model), sample_images(32), _texts(model)
    assert parts.prefix == 0 and parts.grid == 4
    x = last_block_input(parts, pixels)
    with torch.no_grad():
        assert torch.allclose(parts.pool(parts.last_block(x)), model.encode_image(pixels),
                              atol=1e-5)  # fmt: skip
        for method in METHODS.values():
            assert method(parts, x, texts).shape == (2, 3, 4, 4)


def test_unsupported_towers_raise_a_config_error_naming_them():
    torch.manual_seed(0)
    resnet = clipforge.create_model(ClipConfig(
        embed_dim=32, vision=ResNetConfig(image_size=64, layers=(1, 1, 1, 1), width=8, heads=2),
        text=TextConfig(width=32, heads=2, layers=1)))  # fmt: skip
    with pytest.raises(ConfigError, match="ModifiedResNet.*supported: VisionTransformer"):
        clipforge.heatmap(resnet, _image(64, 64), "a dog")
    with pytest.raises(ConfigError, match="EvaVisionTransformer"):
        vit_parts(tiny_eva())


def test_unknown_method_and_no_texts_are_usage_errors(model):
    with pytest.raises(UsageError, match="unknown heat-map method 'nope'"):
        clipforge.heatmap(model, _image(), "a dog", method="nope")
    with pytest.raises(UsageError, match="at least one text"):
        clipforge.heatmap(model, _image(), [])


def test_pointing_game_and_iou_on_synthetic_maps():
    box = (10, 20, 30, 40)
    perfect = np.zeros((64, 64), dtype=np.float32)
    perfect[20:40, 10:30] = 1.0
    outside = np.zeros((64, 64), dtype=np.float32)
    outside[50, 50] = 1.0
    assert pointing_hit(perfect, box) and threshold_iou(perfect, box) == 1.0
    assert not pointing_hit(outside, box) and threshold_iou(outside, box) == 0.0
    assert np.mean([pointing_hit(perfect, box), pointing_hit(outside, box)]) == 0.5
    assert chance(box, (64, 64)) == pytest.approx(400 / 4096)


def test_overlay_blends_at_the_image_size(model):
    image = _image()
    heat = np.zeros((37, 53), dtype=np.float32)
    out = clipforge.dense.overlay(image, heat, alpha=0.0)
    assert out.size == (53, 37) and np.array_equal(np.asarray(out), np.asarray(image))
    assert not np.array_equal(np.asarray(clipforge.dense.overlay(image, heat + 1)),
                              np.asarray(image))  # fmt: skip


def test_renderer_boxes_hold_their_shapes_and_images_are_unchanged():
    spec = SceneSpec([ObjectSpec("square", "red"), ObjectSpec("circle", "blue", "large")])
    image, groups = render_scene_with_boxes(spec, 64, 5)
    assert np.array_equal(np.asarray(image), np.asarray(render_scene(spec, 64, 5)))
    pixels = np.asarray(image)
    for obj, [(x, y, side)] in zip(spec.objects, groups, strict=True):
        colour = np.all(pixels == COLOURS[obj.colour], axis=-1)
        assert colour[y : y + side, x : x + side].sum() == colour.sum() > 0


def test_default_method_is_the_measured_best():
    report = json.loads((ROOT / "benchmarks/results/dense.json").read_text())
    assert report["best_by_pointing_game"] == DEFAULT_METHOD
    best = report["methods"][DEFAULT_METHOD]
    assert best["pointing_game"] >= 2 * best["chance"]
