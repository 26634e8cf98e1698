"""SigLIP 2 NaFlex equals transformers' ``Siglip2Model`` (≤ 1e-5, fp32, random weights) at
patch budgets 256/576/1024 and several aspect ratios, block by block; the preprocessing
equals ``Siglip2ImageProcessorPil`` bit for bit; checkpoints load and save through the hf
format's ``siglip2`` family."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Siglip2Config, Siglip2Model
from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

import clipforge
from clipforge.checkpoints.formats import siglip2_hf_keys
from clipforge.checkpoints.formats.hf_preprocess import preprocess_from_native, preprocess_to_native
from clipforge.preprocess import NaFlexPatches, NaFlexPreprocess, image_transform
from clipforge.preprocess.naflex import naflex_size

from ..conftest import max_diff, perturb_

TOL = 1e-5
PATCH = 4  # small patches keep budgets of 1024 cheap
BUDGETS = (256, 576, 1024)
#: (width, height): wide, tall, square, extreme strip, and smaller than one patch row
SIZES = ((90, 40), (50, 120), (77, 77), (200, 13), (3, 30))
VISION = dict(
    hidden_size=32,
    intermediate_size=72,
    num_hidden_layers=2,
    num_attention_heads=4,
    patch_size=PATCH,
    num_patches=64,
    hidden_act="gelu_pytorch_tanh",
)
TEXT = dict(vocab_size=500, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=12, projection_size=32)  # fmt: skip


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


@pytest.fixture(scope="module")
def pair() -> tuple[Siglip2Model, clipforge.CLIP]:
    torch.manual_seed(0)
    ref = Siglip2Model(Siglip2Config(vision_config=VISION, text_config=TEXT))
    # MLP-input LayerNorm gains of 4: GELU inputs of order 1, where tanh ≠ exact GELU. (Sharp
    # attention LayerNorms would make softmax so peaked that transformers' own eager and
    # SDPA paths differ by 5e-5: the test would measure conditioning, not the model.)
    with torch.no_grad():
        for name, module in ref.vision_model.named_modules():
            if name.endswith(("layer_norm2", "head.layernorm")):
                module.weight.fill_(4.0)
    ref = perturb_(ref).eval()
    assert siglip2_hf_keys.matches(ref.state_dict())
    config = siglip2_hf_keys.config_to_native(ref.config.to_dict())
    model = clipforge.create_model(config)
    model.load_state_dict(siglip2_hf_keys.to_native(ref.state_dict()))
    return ref, model.eval()


def _processor(budget: int) -> Siglip2ImageProcessorPil:
    return Siglip2ImageProcessorPil(patch_size=PATCH, max_num_patches=budget)


@pytest.mark.parametrize("budget", BUDGETS)
def test_preprocessing_equals_transformers_bit_for_bit(budget):
    proc = _processor(budget)
    config = preprocess_to_native(json.loads(proc.to_json_string()))
    assert (config.max_num_patches, config.patch_size, config.interpolation) == (
        budget, PATCH, "bilinear"
    )  # fmt: skip
    assert preprocess_to_native(preprocess_from_native(config)) == config
    ours = image_transform(config)
    assert isinstance(ours, NaFlexPreprocess)
    for image in _images():
        ref = proc(images=image, return_tensors="pt")
        got = ours(image)
        assert torch.equal(got.patches, ref["pixel_values"][0]), image.size
        assert torch.equal(got.mask, ref["pixel_attention_mask"][0].bool()), image.size
        assert torch.equal(got.spatial_shapes, ref["spatial_shapes"][0]), image.size
        rows, cols = got.spatial_shapes.tolist()
        assert rows * cols <= budget and int(got.mask.sum()) == rows * cols


@pytest.mark.parametrize("budget", BUDGETS)
def test_naflex_matches_transformers_every_layer(pair, budget):
    ref, model = pair
    proc = _processor(budget)
    inputs = proc(images=_images(), return_tensors="pt")
    batch = NaFlexPatches(
        inputs["pixel_values"], inputs["pixel_attention_mask"], inputs["spatial_shapes"]
    )
    assert len({tuple(s) for s in batch.spatial_shapes.tolist()}) == len(SIZES)
    with torch.no_grad():
        out = ref.vision_model(**inputs, output_hidden_states=True)
        mine = model.visual.forward_intermediates(batch, output_fmt="NLC")
        features = model.encode_image(batch)
        tokens = model.visual.forward_features(batch)
    layers = out.hidden_states[1:]
    assert len(mine["image_intermediates"]) == len(layers) == VISION["num_hidden_layers"]
    diffs = {
        f"block {i}": max_diff(a, b)
        for i, (a, b) in enumerate(zip(mine["image_intermediates"], layers, strict=True))
    }
    diffs["last_hidden_state"] = max_diff(tokens, out.last_hidden_state)
    diffs["pooled"] = max_diff(features, out.pooler_output)
    diffs["intermediates' pooled"] = max_diff(mine["image_features"], out.pooler_output)
    assert max(diffs.values()) <= TOL, diffs


def test_padding_changes_nothing_and_images_are_independent(pair):
    """One image alone (from the preprocessing, unbatched) embeds as it does in a batch at
    the same budget; a budget of exactly its patch count (no padding) gives the same too."""
    _, model = pair
    config = preprocess_to_native(json.loads(_processor(576).to_json_string()))
    transform = image_transform(config)
    images = _images()
    with torch.no_grad():
        together = model.encode_image(transform.batch(images))
        alone = torch.cat([model.encode_image(transform(image)) for image in images])
        rows, cols = transform(images[0]).spatial_shapes.tolist()
        tight = NaFlexPreprocess(
            config.__class__(**{**config.to_dict(), "max_num_patches": rows * cols})
        )
        unpadded = model.encode_image(tight(images[0]))
    assert max_diff(together, alone) <= TOL
    assert max_diff(unpadded, together[:1]) <= TOL


def test_square_pixels_equal_the_patch_path(pair):
    """(N, 3, H, W) pixels at the position grid's own size are the same model as transformers
    fed those patches (no resize: interpolation to the same grid is the identity)."""
    ref, model = pair
    pixels = torch.randn(2, 3, 8 * PATCH, 7 * PATCH, generator=torch.Generator().manual_seed(3))
    patches = model.visual.as_patches(pixels)
    with torch.no_grad():
        expected = ref.get_image_features(
            pixel_values=patches.patches, pixel_attention_mask=patches.mask.long(),
            spatial_shapes=patches.spatial_shapes,
        )  # fmt: skip
        got = model.encode_image(pixels)
    expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
    assert max_diff(got, expected) <= TOL


def test_text_and_logits_match(pair):
    ref, model = pair
    tokens = torch.randint(0, TEXT["vocab_size"], (3, TEXT["max_position_embeddings"]),
                           generator=torch.Generator().manual_seed(5))  # fmt: skip
    with torch.no_grad():
        got = model.encode_text(tokens)
        expected = ref.get_text_features(input_ids=tokens)
    expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
    assert max_diff(got, expected) <= TOL


def test_directories_load_and_save_through_the_hf_format(pair, tmp_path):
    """``save_pretrained`` (with its image processor) → ``clipforge.load`` (NaFlex
    preprocessing included) → ``clipforge.save(format="hf")`` → ``Siglip2Model``."""
    ref, model = pair
    ref.save_pretrained(tmp_path / "hf")
    _processor(256).save_pretrained(tmp_path / "hf")
    loaded = clipforge.load(tmp_path / "hf")
    assert loaded.preprocess_config.max_num_patches == 256
    images = _images()
    expected_inputs = _processor(256)(images=images, return_tensors="pt")
    with torch.no_grad():
        expected = ref.vision_model(**expected_inputs).pooler_output
        got = clipforge.embed_images(loaded, images, normalize=False, batch_size=2)
    assert got.failures == [] and max_diff(torch.from_numpy(got.embeddings), expected) <= TOL
    out = clipforge.save(loaded, tmp_path / "saved", format="hf")
    again = Siglip2Model.from_pretrained(out).eval()
    for key, value in ref.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    assert clipforge.load(out).preprocess_config == loaded.preprocess_config


def test_position_resize_equals_transformers():
    """Resized positions (per image, bilinear + antialias, padding = first position) equal
    transformers' ``resize_positional_embeddings`` for up- and downsampling."""
    from transformers.models.siglip2.modeling_siglip2 import Siglip2VisionEmbeddings

    from clipforge.models.siglip_naflex import resize_positions

    table = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    shapes = torch.tensor([[8, 8], [3, 20], [16, 2], [1, 1], [30, 30]])
    expected = Siglip2VisionEmbeddings.resize_positional_embeddings(
        table.reshape(8, 8, 32), shapes, 900
    )
    got = resize_positions(table, 8, shapes, 900)
    assert max_diff(got, expected) <= 1e-6
    assert torch.equal(got[0, :64], table)  # the grid's own size: no change


def test_budget_geometry():
    """The largest grid within the budget at the image's aspect ratio: transformers' search."""
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        get_image_size_for_max_num_patches as reference,
    )

    assert naflex_size(512, 512, 16, 256) == (256, 256)
    assert naflex_size(300, 900, 16, 256) == (144, 432)  # 9 × 27 = 243 patches
    for height, width in ((300, 900), (37, 1000), (1, 1), (4000, 3), (333, 777)):
        for budget in BUDGETS:
            got = naflex_size(height, width, 16, budget)
            assert got == reference(height, width, 16, budget)
            assert (got[0] // 16) * (got[1] // 16) <= budget
