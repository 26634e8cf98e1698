"""``export onnx --quantize int8|fp16`` for CLIP, SigLIP and EVA: the bundle records its
quantisation and measured cosines, ``OnnxClip`` runs it, and it equals the torch int8 /
fp16 paths within their own tolerance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.onnx import OnnxClip, export_onnx
from clipforge.quantization import quantize

from ..conftest import sample_images, tiny_model
from ..family_helpers import tiny_eva, tiny_siglip

TEXTS = ["a photo of a cat", "two red squares on a table", "a dog", "the sea at night"]
#: int8 (its own tolerance): each int8 path is >= 0.99 from fp32, so they meet >= 0.98
INT8_COSINE = 0.98
#: fp16 weights and ops vs torch fp16 autocast (fp32 accumulation): both ~1e-3 from fp32
FP16_COSINE = 0.999


def _family(name: str, tmp_path) -> clipforge.CLIP:
    if name == "clip":
        return tiny_model()
    return tiny_siglip(tmp_path / "tokenizer") if name == "siglip" else tiny_eva()


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cos(a, b) -> np.ndarray:
    return (_unit(a) * _unit(b)).sum(-1)


def _torch(model: clipforge.CLIP, pixels: torch.Tensor, tokens: torch.Tensor, dtype=None):
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        return model.encode_image(pixels).float().numpy(), model.encode_text(tokens).float().numpy()


@pytest.mark.parametrize("family", ["clip", "siglip", "eva"])
def test_quantised_bundles_match_the_torch_paths(family, tmp_path):
    model = _family(family, tmp_path)
    pixels = sample_images(model.config.vision.image_size, 3)
    tokens = model.tokenize(TEXTS)
    fp32 = _torch(model, pixels, tokens)
    torch_int8 = _torch(quantize(model), pixels, tokens)
    torch_fp16 = _torch(model, pixels, tokens, torch.float16)
    for kind, reference, tolerance in (("int8", torch_int8, INT8_COSINE),
                                       ("fp16", torch_fp16, FP16_COSINE)):  # fmt: skip
        bundle = OnnxClip(export_onnx(model, tmp_path / kind, quantize=kind))
        record = bundle.quantization
        assert record is not None and record["precision"] == kind
        assert record["image_cosine"] >= 0.99 and record["text_cosine"] >= 0.99
        image = bundle.encode_image(pixels.numpy())
        text = bundle.encode_text(tokens.numpy())
        assert _cos(image, reference[0]).min() >= tolerance
        assert _cos(text, reference[1]).min() >= tolerance
        assert _cos(image, fp32[0]).min() >= 0.99 and _cos(text, fp32[1]).min() >= 0.99
        assert not np.allclose(image, fp32[0], atol=1e-6)  # it really is quantised
    int8 = json.loads((tmp_path / "int8" / "clipforge_onnx.json").read_text())["quantization"]
    assert int8["modules"]["int8_matmul"] > 0 and int8["modules"]["float_matmul"] > 0


def test_export_cli_quantize_refuses_above_max_degradation(tmp_path):
    model_dir = tmp_path / "model"
    clipforge.save(tiny_model(), model_dir)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "onnx", "-m", str(model_dir), "-o",
                                 str(tmp_path / "r"), "--quantize", "int8",
                                 "--max-degradation", "0"])  # fmt: skip
    assert result.exit_code == 1
    assert result.output.count("error:") == 1 and "exceeds --max-degradation 0" in result.output
    result = runner.invoke(app, ["export", "onnx", "-m", str(model_dir), "-o",
                                 str(tmp_path / "s"), "--quantize", "int4"])  # fmt: skip
    assert result.exit_code == 2 and "int8, fp16" in result.output
