"""Similarity matrix, CLIPScore (per-pair clamp at 0) and the similarity heat-map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.preprocess import ImageDecodeError
from clipforge.scoring import clip_score, mean_clip_score, plot_similarity, similarity_matrix

from .conftest import tiny_model

TEXTS = ["a photo of a cat", "a red car", "two dogs playing", "a diagram", "the sea at night"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def model() -> clipforge.CLIP:
    return tiny_model()


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (36, 30 + 4 * i, 3), dtype=np.uint8)) for i in range(5)
    ]


def manual_cosines(model: clipforge.CLIP, images: list, texts: list[str]) -> np.ndarray:
    pixels = torch.stack([model.preprocess(im) for im in images])
    with torch.inference_mode():
        image = model.encode_image(pixels)
        text = model.encode_text(model.tokenize(texts))
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return (image @ text.T).numpy()


def test_similarity_matrix_matches_manual(model, images) -> None:
    sim = similarity_matrix(model, images, TEXTS[:3], batch_size=2)
    assert sim.shape == (5, 3) and sim.dtype == np.float32
    np.testing.assert_allclose(sim, manual_cosines(model, images, TEXTS[:3]), atol=ATOL)


def test_clip_score_formula_and_clamp(model, images) -> None:
    cos = np.diag(manual_cosines(model, images, TEXTS))
    flipped = model.text.text_projection
    scores = clip_score(model, images, TEXTS, batch_size=2)
    np.testing.assert_allclose(scores, np.maximum(100 * cos, 0), atol=1e-3)
    assert mean_clip_score(model, images, TEXTS) == pytest.approx(float(scores.mean()), abs=1e-4)
    np.testing.assert_allclose(
        clip_score(model, images, TEXTS, weight=2.5), np.maximum(2.5 * cos, 0), atol=1e-4
    )
    # Negating the text projection flips every cosine: the pairs that were positive clamp to 0.
    saved = flipped.detach().clone()
    try:
        with torch.no_grad():
            flipped.neg_()
        negated = clip_score(model, images, TEXTS)
    finally:
        with torch.no_grad():
            flipped.copy_(saved)
    np.testing.assert_allclose(negated, np.maximum(-100 * cos, 0), atol=1e-3)
    assert (scores == 0).any() or (negated == 0).any()
    assert ((scores == 0) | (negated == 0)).all()  # each pair clamps in one of the two runs
    assert (scores >= 0).all() and (negated >= 0).all()


def test_clip_score_checks_inputs(model, images, tmp_path) -> None:
    with pytest.raises(ValueError, match="2 images, 3 texts"):
        clip_score(model, images[:2], TEXTS[:3])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        clip_score(model, [images[0], bad], TEXTS[:2])
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        similarity_matrix(model, [bad], TEXTS)


def test_plot_writes_png(model, images, tmp_path) -> None:
    sim = similarity_matrix(model, images[:3], TEXTS[:4])
    photo = tmp_path / "photo.png"
    images[1].save(photo)
    thumbs = [images[0], photo, np.asarray(images[2])]
    for name, columns in [("thumbs", thumbs), ("labels", ["a", "b", "c"]), ("none", None)]:
        out = plot_similarity(sim, columns, TEXTS[:4], tmp_path / f"{name}.png")
        assert out.stat().st_size > 1000
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(out) as png:
            assert png.width > 100 and png.height > 100
    plot_similarity(torch.from_numpy(sim), thumbs, TEXTS[:4], tmp_path / "t.png", annotate=False)
    with pytest.raises(ValueError, match="text columns"):
        plot_similarity(sim, thumbs, TEXTS, tmp_path / "x.png")
    with pytest.raises(ValueError, match="image rows"):
        plot_similarity(sim, thumbs[:2], TEXTS[:4], tmp_path / "x.png")
