"""ONNX export parity (onnxruntime vs PyTorch ≤ 1e-4) and the torch-free runtime path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.configs import ClipConfig, ResNetConfig, TextConfig
from clipforge.onnx import OnnxClip, export_onnx

from ..conftest import REPO, perturb_, shared_path, tiny_vit_config

TOL = 1e-4
TINY_RESNET = ClipConfig(
    embed_dim=32,
    vision=ResNetConfig(image_size=64, layers=(1, 1, 1, 1), width=16, heads=4),
    text=TextConfig(context_length=32, width=64, heads=2, layers=2),
)


@pytest.fixture(scope="module", params=["tiny-vit", "tiny-resnet"])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    arch = TINY_RESNET if request.param == "tiny-resnet" else tiny_vit_config()
    model = perturb_(clipforge.create_model(arch)).eval()
    out = tmp_path_factory.mktemp(request.param)
    export_onnx(model, out)
    assert not any(m.training for m in model.modules()), "export must not change the model's mode"
    return model, out


def test_onnx_matches_pytorch_with_dynamic_batch(exported):
    model, out = exported
    runtime = OnnxClip(out)
    size = model.config.vision.image_size
    for batch in (1, 5):  # export used batch 2
        pixels = torch.randn(batch, 3, size, size)
        tokens = model.tokenize(["a", "a photo of a big dog", "x " * 60, "", "cat"][:batch])
        with torch.no_grad():
            want_image, want_text = model.encode_image(pixels), model.encode_text(tokens)
        assert np.abs(runtime.encode_image(pixels.numpy()) - want_image.numpy()).max() <= TOL
        assert np.abs(runtime.encode_text(tokens.numpy()) - want_text.numpy()).max() <= TOL


def test_runtime_preprocess_and_tokenize_equal_pytorch(exported):
    model, out = exported
    runtime = OnnxClip(out)
    photo = shared_path("data", "photos", "chelsea.png")
    assert np.array_equal(runtime.preprocess(photo), model.preprocess(photo).numpy())
    texts = ["a photo of a cat", "Ünïcode 猫 😺"]
    assert np.array_equal(runtime.tokenize(texts), model.tokenize(texts).numpy())
    with torch.no_grad():
        want = model.encode_image(model.preprocess(photo)[None], normalize=True).numpy()
    assert np.abs(runtime.embed_images([photo]) - want).max() <= TOL


def test_runtime_imports_without_torch(exported):
    _, out = exported
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any torch import now fails
        "from clipforge.onnx import OnnxClip\n"
        f"m = OnnxClip({str(out)!r})\n"
        "e = m.embed_texts(['a cat', 'a dog'])\n"
        "print(e.shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("(2, ")


def test_cli_export_onnx(tmp_path):
    """``export onnx -m <checkpoint dir>``, on a tiny model: the encoders carry every weight."""
    torch.manual_seed(0)
    model = perturb_(clipforge.create_model(tiny_vit_config())).eval()
    clipforge.save(model, tmp_path / "ckpt")
    out = tmp_path / "onnx"
    result = CliRunner().invoke(
        app, ["export", "onnx", "-m", str(tmp_path / "ckpt"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    weight_bytes = 4 * model.num_parameters()["image"]
    assert (out / "image_encoder.onnx").stat().st_size > weight_bytes
    runtime = OnnxClip(out)
    with torch.no_grad():
        want = model.encode_text(model.tokenize(["hi"])).numpy()
    got = runtime.embed_texts(["hi"], normalize=False)
    assert got.shape == (1, model.config.embed_dim)
    assert np.abs(got - want).max() <= TOL
