"""Hostile and unusual images: extreme aspect ratios (bounded work) and float TIFFs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from clipforge.embedding import embed_images
from clipforge.preprocess import ImageDecodeError, Preprocess, PreprocessConfig
from clipforge.preprocess.transforms import MAX_RESIZED_SIDE, check_geometry

from ..conftest import REPO, tiny_model


def _strip(path, width: int, height: int):
    Image.new("L", (width, height), 128).save(path)
    return path


def test_extreme_aspect_ratio_is_a_reported_failure(tmp_path):
    strip = _strip(tmp_path / "strip.png", 1, 10000)
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    result = embed_images(tiny_model(), [strip, good])
    assert result.paths == [str(good)]
    assert len(result.failures) == 1
    path, reason = result.failures[0]
    assert path == str(strip) and "aspect ratio" in reason and "1x10000" in reason


def test_preprocess_names_the_file_for_extreme_aspect_ratio(tmp_path):
    strip = _strip(tmp_path / "wide.png", 40000, 1)
    with pytest.raises(ImageDecodeError) as info:
        Preprocess(PreprocessConfig(image_size=224))(strip)
    assert info.value.path == str(strip) and "aspect ratio" in info.value.reason


def test_pil_input_with_extreme_aspect_ratio_raises_value_error():
    with pytest.raises(ValueError, match="aspect ratio"):
        Preprocess(PreprocessConfig(image_size=32))(Image.new("RGB", (50000, 2)))


def test_resized_side_limit_is_inclusive():
    cfg = PreprocessConfig(image_size=32)
    check_geometry(MAX_RESIZED_SIDE // 32, 1, cfg)  # exactly at the limit: accepted
    with pytest.raises(ValueError, match="aspect ratio"):
        check_geometry(MAX_RESIZED_SIDE // 32 + 1, 1, cfg)


def test_longest_mode_refuses_a_vanishing_side():
    cfg = PreprocessConfig(image_size=32, resize_mode="longest")
    check_geometry(64, 2, cfg)  # 32x1 after the resize
    with pytest.raises(ValueError, match="leaves no pixels"):
        Preprocess(cfg)(Image.new("RGB", (1000, 1)))


def test_extreme_aspect_ratio_memory_is_bounded(tmp_path):
    """Under a 400 MB address-space headroom the 1x40000 strip is refused, not a MemoryError."""
    strip = _strip(tmp_path / "tall.png", 1, 40000)
    limit_strip = _strip(tmp_path / "limit.png", 2, MAX_RESIZED_SIDE * 2 // 224)
    script = textwrap.dedent(
        f"""
        import resource
        from clipforge.preprocess import ImageDecodeError, Preprocess, PreprocessConfig
        pre = Preprocess(PreprocessConfig(image_size=224))
        pre({str(limit_strip)!r})  # warm up imports before limiting
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        budget = used + 400 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
        out = pre({str(limit_strip)!r})  # the largest accepted ratio still fits
        assert out.shape == (3, 224, 224), out.shape
        try:
            pre({str(strip)!r})
        except ImageDecodeError as err:
            print("REFUSED", err.reason)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "REFUSED extreme aspect ratio 1x40000" in done.stdout


def test_float_tiff_in_unit_range_is_scaled_not_black(tmp_path):
    ramp = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(ramp).save(tmp_path / "float.tif")
    Image.fromarray(np.rint(ramp * 255).astype(np.uint8)).save(tmp_path / "eight.png")
    pre = Preprocess(PreprocessConfig(image_size=32))
    assert Image.open(tmp_path / "float.tif").mode == "F"
    out = pre(tmp_path / "float.tif")
    np.testing.assert_array_equal(out.numpy(), pre(tmp_path / "eight.png").numpy())
    assert out.std() > 0.5  # not a constant (black) image


def test_float_tiff_outside_unit_range_is_rescaled(tmp_path):
    values = np.linspace(-3.0, 7.0, 16 * 16, dtype=np.float32).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "wide.tif")
    pixels = np.asarray(Preprocess(PreprocessConfig(image_size=16)).to_array(tmp_path / "wide.tif"))
    assert pixels[0, 0, 0] < pixels[0, -1, -1]  # min maps to 0, max to 255
    assert pixels.max() - pixels.min() > 3.0


def test_float_tiff_with_nan_is_refused_with_a_reason(tmp_path):
    values = np.zeros((8, 8), dtype=np.float32)
    values[2, 3] = np.nan
    Image.fromarray(values).save(tmp_path / "nan.tif")
    result = embed_images(tiny_model(), [tmp_path / "nan.tif"])
    assert len(result) == 0
    assert result.failures == [(str(tmp_path / "nan.tif"), result.failures[0][1])]
    assert "NaN" in result.failures[0][1]
