"""The CLI on saved checkpoints of every family: ``embed`` (texts and images) and ``classify``
on a tiny SigLIP directory (its own tokenizer.json, sigmoid probabilities) and a tiny EVA-02
one print exactly what the Python API computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.embedding import embed_images, embed_texts
from clipforge.zeroshot import ZeroShotClassifier, get_templates

from ..conftest import shared_path
from ..family_helpers import tiny_eva, tiny_siglip

TEXTS = ["A dog runs on the beach!", "two children play in the water", "a cat"]
LABELS = ["cat", "rocket", "coffee cup", "horse"]


@pytest.fixture(params=["siglip", "eva"])
def checkpoint(request, tmp_path):
    model = tiny_siglip(tmp_path / "tokenizer") if request.param == "siglip" else tiny_eva()
    clipforge.save(model, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_embed_and_classify_equal_the_python_api(checkpoint, tmp_path):
    model = clipforge.load(checkpoint)
    photos = shared_path("data", "photos")
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    _run("embed", "--texts", str(tmp_path / "texts.txt"), "-o", str(tmp_path / "t.npy"),
         "-m", str(checkpoint))  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "t.npy"), embed_texts(model, TEXTS))

    _run("embed", str(photos), "-o", str(tmp_path / "i.npy"), "-m", str(checkpoint),
         "--workers", "0")  # fmt: skip
    want = embed_images(model, sorted(str(p) for p in photos.iterdir()))
    assert want.failures == [] and np.array_equal(np.load(tmp_path / "i.npy"), want.embeddings)

    out = _run("classify", str(photos), "--labels", ",".join(LABELS), "--templates", "simple",
               "--top-k", "4", "--json", "-m", str(checkpoint), "--workers", "0")  # fmt: skip
    rows = json.loads(out)["predictions"]
    classifier = ZeroShotClassifier(model, LABELS, templates=get_templates("simple"))
    result = classifier.predict(sorted(str(p) for p in photos.iterdir()), top_k=4)
    got = np.array([[t["prob"] for t in row["top_k"]] for row in rows])
    assert [[t["label"] for t in row["top_k"]] for row in rows] == result.top_k_labels
    assert np.abs(got - np.asarray(result.top_k_scores)).max() <= 1e-6
    sums = got.sum(axis=1)  # SigLIP: independent per-class sigmoids; CLIP: a softmax
    assert np.allclose(sums, 1.0) == (model.logit_bias is None)
