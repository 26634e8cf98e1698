"""``export_onnx(tokens=True)`` / ``clipforge export onnx --tokens``: each encoder also outputs
the last block's tokens after the final norm, equal to PyTorch under onnxruntime (≤ 1e-5) at
batch sizes other than the traced one; a bundle without them refuses token calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.onnx import OnnxClip, export_onnx

from ..conftest import tiny_vit_config
from ..family_helpers import TINY_SIGLIP, tiny_eva, tiny_siglip

TOL = 1e-5


@pytest.fixture(scope="module", params=["vit", "eva", "siglip2"])
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "vit":
        torch.manual_seed(0)
        model = clipforge.create_model(tiny_vit_config()).eval()
    elif request.param == "eva":
        model = tiny_eva()
    else:
        model = tiny_siglip(tmp / "tokenizer", TINY_SIGLIP)
    export_onnx(model, tmp / "onnx", tokens=True)
    return model, tmp / "onnx"


@pytest.mark.parametrize("batch", [1, 3])
def test_token_outputs_equal_pytorch(exported, batch):
    model, out = exported
    runtime = OnnxClip(out)
    size = model.config.vision.image_size
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    tokens = model.tokenize(["a red square", "two blue circles", "x"][:batch])
    with torch.no_grad():
        want_image_tokens = model.visual.forward_features(pixels)
        want_text_tokens = model.text.forward_features(tokens)
        want_image, want_text = model.encode_image(pixels), model.encode_text(tokens)
    image, image_tokens = runtime.encode_image_tokens(pixels.numpy())
    text, text_tokens = runtime.encode_text_tokens(tokens.numpy())
    assert image_tokens.shape == tuple(want_image_tokens.shape)
    assert text_tokens.shape == tuple(want_text_tokens.shape)
    assert np.abs(image_tokens - want_image_tokens.numpy()).max() <= TOL
    assert np.abs(text_tokens - want_text_tokens.numpy()).max() <= TOL
    assert np.abs(image - want_image.numpy()).max() <= TOL
    assert np.abs(text - want_text.numpy()).max() <= TOL
    assert np.abs(runtime.encode_image(pixels.numpy()) - want_image.numpy()).max() <= TOL


def test_cli_tokens_flag_and_plain_bundles_refuse(tmp_path):
    torch.manual_seed(0)
    model = clipforge.create_model(tiny_vit_config())
    clipforge.save(model, tmp_path / "model")
    result = CliRunner().invoke(
        app, ["export", "onnx", "-o", str(tmp_path / "tok"), "-m",
              str(tmp_path / "model"), "--tokens"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _, tokens = OnnxClip(tmp_path / "tok").encode_image_tokens(np.zeros((1, 3, 32, 32), "f4"))
    assert tokens.ndim == 3
    export_onnx(model, tmp_path / "plain")
    with pytest.raises(ValueError, match="--tokens"):
        OnnxClip(tmp_path / "plain").encode_image_tokens(np.zeros((1, 3, 32, 32), "f4"))
