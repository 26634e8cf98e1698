"""int8 towers (torch.ao dynamic, per-channel) against fp32: every family, the precision
path of the embedding helpers, accuracy accounting (warn / refuse) and ``auto``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import clipforge
from clipforge import runtime
from clipforge.embedding import embed_images, embed_texts
from clipforge.errors import UsageError
from clipforge.quantization import (
    Calibration,
    QuantizationError,
    QuantizationWarning,
    apply_precision,
    default_calibration,
    for_precision,
    is_quantized,
    quantize,
)
from clipforge.zeroshot import ZeroShotClassifier

from .conftest import sample_images, sample_tokens, tiny_model
from .family_helpers import tiny_eva, tiny_siglip


def _family(name: str, tmp_path) -> clipforge.CLIP:
    if name == "clip":
        return tiny_model()
    if name == "siglip":
        return tiny_siglip(tmp_path / "tokenizer")
    return tiny_eva()


def _linear_count(model: nn.Module) -> int:
    """Linear layers plus the fused q/k/v projections held as parameters."""
    fused = sum(name.endswith("in_proj_weight") for name, _ in model.named_parameters())
    return fused + sum(isinstance(m, nn.Linear) for m in model.modules())


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


@pytest.mark.parametrize("family", ["clip", "siglip", "eva"])
def test_int8_towers_match_fp32_and_quantise_every_linear(family, tmp_path):
    model = _family(family, tmp_path)
    q = quantize(model)
    report = q.quantization_report
    # every projection (fused q/k/v included) and MLP is int8; nothing linear left in float
    assert report.modules == {"int8_linear": _linear_count(model), "float_linear": 0}
    # embeddings, norms and the patch convolution stay float modules
    float_kinds = (nn.LayerNorm, nn.Embedding, nn.Conv2d)
    assert [type(m) for m in q.modules() if isinstance(m, float_kinds)] == [
        type(m) for m in model.modules() if isinstance(m, float_kinds)
    ]
    assert report.image_cosine is not None and report.image_cosine >= 0.99
    assert report.text_cosine is not None and report.text_cosine >= 0.99
    size = model.config.vision.image_size
    pixels = sample_images(size, 4)
    tokens = q.tokenize(["a photo of a cat", "two red squares", "a dog", "the sea at night"])
    with torch.inference_mode():
        image = _cosine(model.encode_image(pixels), q.encode_image(pixels))
        text = _cosine(model.encode_text(tokens), q.encode_text(tokens))
        assert not torch.equal(model.encode_image(pixels), q.encode_image(pixels))
    assert image.min() >= 0.99 and text.min() >= 0.99
    assert not is_quantized(model) and is_quantized(q)  # the source model is unchanged


def test_pooled_rows_of_the_int8_attention_match_its_full_pass():
    """``forward_at`` (text pooling) and ``forward_cls`` (EVA) compute one row of the full
    pass; in int8 the same up to the activation scales, which are per batch (the pooled
    row's output projection and MLP see one row, the full pass every row)."""
    q = quantize(tiny_model())
    tokens = sample_tokens()[:2]
    x, index = torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 7])
    with torch.inference_mode():
        tower = q.tower("text")
        pooled = tower(tokens, trim_padding=False)
        full = tower.forward_features(tokens)[torch.arange(2), tower.eot_positions(tokens)]
        assert _cosine(pooled, full @ tower.text_projection).min() > 0.999
        attn = tower.transformer.resblocks[0].attn
        assert _cosine(attn(x)[torch.arange(2), index], attn.forward_at(x, index)).min() > 0.999
    eva = quantize(tiny_eva()).tower("image")
    pixels = sample_images(32, 2)
    with torch.inference_mode():
        cls = eva.proj(eva.forward_features(pixels)[:, 0])
        assert _cosine(eva(pixels), cls).min() > 0.999


def test_precision_int8_runs_the_int8_twin_in_every_helper():
    model = tiny_model()
    pixels = sample_images(32, 3)
    texts = ["a cat", "a dog", "a red square"]
    fp32 = embed_images(model, pixels).embeddings
    int8 = embed_images(model, pixels, precision="int8").embeddings
    twin, autocast = for_precision(model, "int8")
    assert is_quantized(twin) and autocast == "fp32" and for_precision(model, "int8")[0] is twin
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(twin.encode_image(pixels), dim=-1).numpy()
    np.testing.assert_allclose(int8, expected, atol=1e-6)
    assert not np.array_equal(fp32, int8) and (fp32 * int8).sum(-1).min() >= 0.99
    text32, text8 = embed_texts(model, texts), embed_texts(model, texts, precision="int8")
    assert not np.array_equal(text32, text8) and (text32 * text8).sum(-1).min() >= 0.99
    # an int8 model runs as it is (None / fp32 / int8) and refuses autocast precisions
    assert np.array_equal(embed_texts(twin, texts), text8)
    with pytest.raises(UsageError, match="this model is int8"):
        embed_texts(twin, texts, precision="bf16")
    classifier = ZeroShotClassifier(model, ["cat", "dog"], templates=["a photo of a {c}."],
                                    precision="int8")  # fmt: skip
    assert classifier.predict(pixels).top_k_labels[0][0] in ("cat", "dog")


def test_max_degradation_refuses_and_the_tolerance_warns():
    model = tiny_model()
    with pytest.raises(QuantizationError, match=r"degradation 0\.\d+ .*exceeds --max-degradation 0"):
        quantize(model, max_degradation=0.0)
    assert quantize(model, max_degradation=0.01).quantization_report.degradation <= 0.01
    with pytest.warns(QuantizationWarning, match="below the tolerance 1.0"):
        quantize(model, warn_below=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationWarning)
        quantize(model)  # within the default tolerance: silent


def test_calibration_sets_are_deterministic_and_folders_are_read(tmp_path):
    a, b = default_calibration(4, size=32), default_calibration(4, size=32)
    assert [np.asarray(x).tobytes() for x in a.images] == [np.asarray(x).tobytes() for x in b.images]
    assert len(a.texts) == 40 and a.describe() == "built-in: 4 images, 40 prompts"
    for i, image in enumerate(a.images):
        image.save(tmp_path / f"{i}.png")
    (tmp_path / "prompts.txt").write_text("a cat\na dog\n", encoding="utf-8")
    report = quantize(tiny_model(), calibration=tmp_path).quantization_report
    assert report.calibration == f"{tmp_path}: 4 images, 2 prompts"
    own = Calibration(a.images[:2], ["one prompt"], "mine")
    assert quantize(tiny_model(), calibration=own).quantization_report.calibration == (
        "mine: 2 images, 1 prompts"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(clipforge.errors.InputError, match="no images"):
        quantize(tiny_model(), calibration=empty)


def test_auto_picks_bf16_only_where_the_cpu_computes_it(monkeypatch):
    model = tiny_model()
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: ())
    assert runtime.resolve_precision("auto", "cpu") == "int8"
    assert is_quantized(apply_precision(model, "auto"))
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert runtime.resolve_precision("auto", "cpu") == "bf16"
    assert apply_precision(model, "auto") is model
    assert runtime.resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(clipforge.errors.ConfigError, match="unknown precision 'int4'"):
        runtime.resolve_precision("int4", "cpu")
