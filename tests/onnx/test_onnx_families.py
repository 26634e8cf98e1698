"""ONNX export for every family: tiny SigLIP (bidirectional text, last-token pooling, MAP head,
its own SentencePiece tokenizer carried in the bundle) and EVA-02 (2-D RoPE, SwiGLU) models
run under onnxruntime equal PyTorch ≤ 1e-5, at batch sizes other than the exported one."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.onnx import OnnxClip, export_onnx

from ..conftest import REPO, shared_path
from ..family_helpers import (
    SIGLIP_CONTEXT,
    TINY_SIGLIP,
    TINY_SIGLIP_NO_PROJ,
    tiny_eva,
    tiny_siglip,
)

TOL = 1e-5
TEXTS = ["A dog runs on the beach!", "two children play in the water", "x", "", "a man",
         "a black and white dog jumps over a fence " * 12]  # fmt: skip


@pytest.fixture(scope="module", params=["siglip2", "siglip-no-proj", "eva"])
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "eva":
        model = tiny_eva()
    else:
        config = TINY_SIGLIP if request.param == "siglip2" else TINY_SIGLIP_NO_PROJ
        model = tiny_siglip(tmp / "tokenizer", config)
    export_onnx(model, tmp / "onnx")
    return model, tmp / "onnx"


@pytest.mark.parametrize("batch", [1, 5])  # the export traced batch 2
def test_embeddings_equal_pytorch_at_any_batch_size(exported, batch):
    model, out = exported
    runtime = OnnxClip(out)
    size = model.config.vision.image_size
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    tokens = model.tokenize(TEXTS[:batch])
    with torch.no_grad():
        want_image, want_text = model.encode_image(pixels), model.encode_text(tokens)
    assert np.abs(runtime.encode_image(pixels.numpy()) - want_image.numpy()).max() <= TOL
    assert np.abs(runtime.encode_text(tokens.numpy()) - want_text.numpy()).max() <= TOL


def test_runtime_tokenizes_with_the_models_own_tokenizer(exported):
    model, out = exported
    runtime = OnnxClip(out)
    assert np.array_equal(runtime.tokenize(TEXTS), model.tokenize(TEXTS).numpy())
    photo = shared_path("data", "photos", "chelsea.png")
    with torch.no_grad():
        want_text = model.encode_text(model.tokenize(TEXTS), normalize=True).numpy()
        want_image = model.encode_image(model.preprocess(photo)[None], normalize=True).numpy()
    assert np.abs(runtime.embed_texts(TEXTS) - want_text).max() <= TOL
    assert np.abs(runtime.embed_images([photo]) - want_image).max() <= TOL


def test_bundle_declares_the_towers_text_input(exported):
    model, out = exported
    meta = json.loads((out / "clipforge_onnx.json").read_text())
    assert meta["text_input"] == model.text.input_spec()
    if isinstance(model.config.text, clipforge.configs.SigLipTextConfig):
        assert meta["text_input"] == {"pooling": "last"}
        assert meta["tokenizer"]["kind"] == "sentencepiece"
        assert (out / "tokenizer.json").is_file()
        assert OnnxClip(out).tokenize(["a dog"]).shape == (1, SIGLIP_CONTEXT)  # padded in full
    else:
        assert meta["text_input"]["pooling"] == "eot" and meta["tokenizer"] == {"kind": "clip_bpe"}


def test_siglip_runtime_needs_no_torch(exported):
    model, out = exported
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any torch import now fails
        "from clipforge.onnx import OnnxClip\n"
        f"print(OnnxClip({str(out)!r}).tokenize(['a dog runs']).tolist())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == model.tokenize(["a dog runs"]).tolist()


def test_a_siglip_model_without_a_tokenizer_exports_for_token_ids(tmp_path):
    model = tiny_siglip(tmp_path / "tokenizer")
    model._tokenizer = None  # a SigLIP architecture built without its vocabulary
    with pytest.warns(UserWarning, match="carries no tokenizer"):
        export_onnx(model, tmp_path / "onnx")
    runtime = OnnxClip(tmp_path / "onnx")
    tokens = torch.randint(0, 400, (3, SIGLIP_CONTEXT), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.encode_text(tokens).numpy()
    assert np.abs(runtime.encode_text(tokens.numpy()) - want).max() <= TOL
    with pytest.raises(ValueError, match="carries no tokenizer"):
        runtime.tokenize(["a dog"])


@pytest.mark.slow
def test_cli_exports_a_saved_siglip_checkpoint(tmp_path):
    model = tiny_siglip(tmp_path / "tokenizer")
    clipforge.save(model, tmp_path / "ckpt")
    result = CliRunner().invoke(
        app, ["export", "onnx", "-m", str(tmp_path / "ckpt"), "-o", str(tmp_path / "onnx")]
    )
    assert result.exit_code == 0, result.output
    runtime = OnnxClip(tmp_path / "onnx")
    with torch.no_grad():
        want = model.encode_text(model.tokenize(TEXTS)).numpy()
    assert np.abs(runtime.embed_texts(TEXTS, normalize=False) - want).max() <= TOL
