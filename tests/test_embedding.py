"""Batch embedding streams through a DataLoader, embeds every good input and reports bad ones."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.embedding import EmbeddingResult, embed_images, embed_texts

from .conftest import tiny_model

ATOL = 1e-5


@pytest.fixture(scope="module")
def model() -> clipforge.CLIP:
    return tiny_model()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb_png(path: Path, side: int = 30000) -> Path:
    """A few-hundred-byte PNG whose header claims side x side RGB pixels."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
    png += _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def write_good_images(folder: Path, n: int = 6) -> list[Path]:
    """Random images of varied size, mode and format."""
    rng = np.random.default_rng(0)
    paths = []
    specs = [
        ("RGB", "jpg"),
        ("L", "png"),
        ("RGBA", "png"),
        ("RGB", "png"),
        ("P", "png"),
        ("RGB", "jpg"),
    ]
    for i in range(n):
        mode, ext = specs[i % len(specs)]
        h, w = 20 + 7 * i, 48 - 3 * i
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        image = image.convert(mode) if mode != "P" else image.quantize(16)
        path = folder / f"good{i}.{ext}"
        image.save(path)
        paths.append(path)
    return paths


def write_bad_images(folder: Path) -> dict[str, Path]:
    big = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    big.save(folder / "full.jpg", quality=95)
    data = (folder / "full.jpg").read_bytes()
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "notes.jpg"
    text.write_text("this is not an image\n" * 10)
    return {
        "truncated": truncated,
        "empty": empty,
        "text": text,
        "missing": folder / "does_not_exist.jpg",
        "bomb": write_bomb_png(folder / "bomb.png"),
    }


def embed_alone(model: clipforge.CLIP, path: Path) -> np.ndarray:
    with torch.inference_mode():
        return model.encode_image(model.preprocess(path)[None], normalize=True)[0].numpy()


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> tuple[list[Path], list[Path], dict[str, Path]]:
    good = write_good_images(tmp_path)
    bad = write_bad_images(tmp_path)
    # batch_size=3: [g g g] [bad bad bad] [g bad bad] [g g g]: one batch has no good input
    order = [*good[:3], bad["truncated"], bad["empty"], bad["text"]]
    order += [good[3], bad["missing"], bad["bomb"], *good[4:]]
    return order, good, bad


def test_mixed_folder_embeds_good_and_reports_bad(model, mixed_folder) -> None:
    order, good, bad = mixed_folder
    result = embed_images(model, order, batch_size=3)
    assert isinstance(result, EmbeddingResult)
    assert result.paths == [str(p) for p in good]
    assert result.indices.tolist() == [order.index(p) for p in good]
    assert result.embeddings.dtype == np.float32
    assert result.embeddings.shape == (len(good), model.config.embed_dim)
    assert len(result) == len(good)
    for row, path in zip(result.embeddings, good, strict=True):
        np.testing.assert_allclose(row, embed_alone(model, path), atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)

    reasons = dict(result.failures)
    assert [p for p, _ in result.failures] == [str(p) for p in order if p not in good]
    assert set(reasons) == {str(p) for p in bad.values()}
    assert all(reasons.values())
    assert "truncated" in reasons[str(bad["truncated"])]
    assert "empty" in reasons[str(bad["empty"])]
    assert "no such file" in reasons[str(bad["missing"])]
    assert "not a recognised image" in reasons[str(bad["text"])]
    assert "decompression bomb" in reasons[str(bad["bomb"])]


def test_workers_give_the_same_result(model, mixed_folder) -> None:
    order, _, _ = mixed_folder
    serial = embed_images(model, order, batch_size=4, num_workers=0)
    parallel = embed_images(model, order, batch_size=4, num_workers=2)
    assert parallel.paths == serial.paths
    assert parallel.failures == serial.failures
    np.testing.assert_array_equal(parallel.indices, serial.indices)
    np.testing.assert_allclose(parallel.embeddings, serial.embeddings, atol=1e-6)


def test_lowered_bomb_limit_reaches_workers(model, tmp_path, monkeypatch) -> None:
    good = write_good_images(tmp_path, n=2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # every image above 400 pixels fails
    for workers in (0, 1):
        result = embed_images(model, good, num_workers=workers)
        assert len(result) == 0 and result.embeddings.shape == (0, model.config.embed_dim)
        assert [p for p, _ in result.failures] == [str(p) for p in good]
        assert all("decompression bomb" in reason for _, reason in result.failures)


def test_unnormalized_pil_and_tensor_inputs(model, tmp_path) -> None:
    paths = write_good_images(tmp_path, n=3)
    pixels = torch.stack([model.preprocess(p) for p in paths])
    with torch.inference_mode():
        expected = model.encode_image(pixels).numpy()
    from_paths = embed_images(model, paths, normalize=False)
    from_pil = embed_images(model, [Image.open(p) for p in paths], normalize=False, batch_size=2)
    from_batch = embed_images(model, pixels, normalize=False, batch_size=2)
    from_list = embed_images(model, list(pixels), normalize=False)
    for result in (from_paths, from_pil, from_batch, from_list):
        np.testing.assert_allclose(result.embeddings, expected, atol=ATOL)
        assert result.failures == []
    assert from_pil.paths == [None] * 3 and from_batch.indices.tolist() == [0, 1, 2]


def test_edge_cases(model, tmp_path, capsys) -> None:
    empty = embed_images(model, [])
    assert empty.embeddings.shape == (0, model.config.embed_dim) and empty.failures == []
    with pytest.raises(TypeError, match="image 0"):
        embed_images(model, [42])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        embed_images(model, torch.zeros(2, 32, 32))
    model.train()
    try:
        paths = write_good_images(tmp_path, n=3)
        embed_images(model, paths, batch_size=1, progress=True)
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    assert "3/3" in capsys.readouterr().err


def test_embed_texts_matches_encode_text(model) -> None:
    texts = ["a photo of a cat", "a dog", "", "a very " * 30 + "long caption", "a car"]
    with torch.inference_mode():
        raw = model.encode_text(model.tokenize(texts)).numpy()
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    out = embed_texts(model, texts, batch_size=2)
    assert out.dtype == np.float32 and out.shape == (5, model.config.embed_dim)
    np.testing.assert_allclose(out, unit, atol=ATOL)
    np.testing.assert_allclose(embed_texts(model, texts, normalize=False), raw, atol=ATOL)
    np.testing.assert_allclose(embed_texts(model, "a dog"), unit[1:2], atol=ATOL)
    assert embed_texts(model, []).shape == (0, model.config.embed_dim)
