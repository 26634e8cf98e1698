"""The command line, end to end, with random-weight models (no downloads).

Most commands load a tiny checkpoint directory (``--model DIR``); ``embed --texts`` builds
a named architecture with random weights, the other way ``--model`` is read.
"""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app

from ..conftest import perturb_, shared_path, tiny_vit_config

runner = CliRunner()
CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


@pytest.fixture(scope="module")
def cifar_images(tmp_path_factory):
    """Two real CIFAR-10 test JPEGs per class, extracted to a temporary folder."""
    out = tmp_path_factory.mktemp("cifar")
    wanted: dict[str, int] = {}
    with tarfile.open(shared_path("data", "cifar10-test.tar.gz")) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and wanted.get(parts[2], 0) < 2:
                wanted[parts[2]] = wanted.get(parts[2], 0) + 1
                (out / f"{parts[2]}_{parts[3]}").write_bytes(tar.extractfile(member).read())
            if len(wanted) == 10 and all(v == 2 for v in wanted.values()):
                break
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A tiny random ViT CLIP saved as a clipforge directory, for ``--model``."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny")
    clipforge.save(perturb_(clipforge.create_model(tiny_vit_config())), out)
    return str(out)


DIM = tiny_vit_config().embed_dim


def test_models_lists_architectures_as_json():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    names = {row["name"] for row in json.loads(result.output)}
    assert {"ViT-B-32", "RN50"} <= names


def test_classify_cifar10_zero_shot_end_to_end(cifar_images, tiny):
    result = runner.invoke(
        app,
        [
            "classify",
            str(cifar_images),
            "--labels",
            ",".join(CIFAR_CLASSES),
            "--templates",
            "cifar10",
            "--model",
            tiny,
            "--top-k",
            "3",
            "--json",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["predictions"]) == 20 and out["failures"] == []
    for row in out["predictions"]:
        probs = [t["prob"] for t in row["top_k"]]
        assert all(0 <= p <= 1 for p in probs) and probs == sorted(probs, reverse=True)
        assert {t["label"] for t in row["top_k"]} <= set(CIFAR_CLASSES)


def test_embed_reports_bad_files_and_keeps_good_ones(cifar_images, tiny, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(cifar_images.iterdir())[:3]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(good[0].read_bytes()[:200])
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "emb.npy"
    result = runner.invoke(
        app, ["embed", str(folder), "-o", str(out), "--model", tiny, "--workers", "0"]
    )
    assert result.exit_code == 1
    assert "broken.jpg" in result.output and "empty.png" in result.output
    vectors = np.load(out)
    ids = out.with_suffix(".ids.txt").read_text().split()
    assert vectors.shape == (3, DIM) and len(ids) == 3
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_embed_texts_to_parquet(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat\na dog\n\na bird\n")
    out = tmp_path / "t.parquet"
    result = runner.invoke(app, ["embed", "--texts", str(texts), "-o", str(out), "-m", "ViT-S-32"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == ["a cat", "a dog", "a bird"]
    assert len(table.column("embedding")[0]) == 384


def test_similarity_plot_and_score(cifar_images, tiny, tmp_path):
    images = sorted(cifar_images.iterdir())[:2]
    plot = tmp_path / "sim.png"
    args = [
        "--images",
        str(images[0]),
        "--images",
        str(images[1]),
        "--texts",
        "a cat",
        "--texts",
        "a ship",
        "-m",
        tiny,
        "--json",
    ]
    result = runner.invoke(app, ["similarity", *args, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    sim = np.array(json.loads(result.stdout)["similarity"])
    assert sim.shape == (2, 2) and np.all(np.abs(sim) <= 1)
    assert plot.stat().st_size > 1000
    result = runner.invoke(app, ["score", *args])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["scores"]
    assert np.allclose(scores, np.maximum(100 * np.diag(sim), 0), atol=1e-3)


def test_score_needs_one_text_per_image(cifar_images):
    image = str(sorted(cifar_images.iterdir())[0])
    result = runner.invoke(app, ["score", "--images", image, "--texts", "a", "--texts", "b"])
    assert result.exit_code != 0 and "one text per image" in result.output
