"""Phone and camera formats in the index: HEIC, AVIF, RAW previews, EXIF orientation 1-8,
missing plugins recorded (and retried once installed), EXIF dates, places and cameras."""

from __future__ import annotations

import io
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

import clipforge
from clipforge.embedding import embed_images
from clipforge.index import photos
from clipforge.index.exif import photo_meta
from clipforge.index.photos import open_photo, summary_line
from tests.conftest import tiny_model
from tests.photo_helpers import (
    UPRIGHT,
    Shot,
    jpeg_bytes,
    pixels,
    write_dng,
    write_heic,
    write_photo,
)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _vector(index, path) -> np.ndarray:
    row = index.meta.db.execute("SELECT vector FROM images WHERE path = ?", (str(path),))
    return np.frombuffer(row.fetchone()[0], np.float32)


def _clear_plugin_caches() -> None:
    for probe in (photos.heif_available, photos.avif_available, photos.rawpy_available):
        probe.cache_clear()


def test_heic_avif_and_raw_preview_are_indexed(tmp_path, model):
    folder = tmp_path / "phone"
    heic = write_heic(folder / "IMG_0001.HEIC", seed=1)
    avif = write_photo(folder / "IMG_0002.avif", Shot(make="Google"), seed=2, quality=90)
    preview = pixels(3, (64, 48))
    dng = write_dng(folder / "DSC_0003.dng", jpeg_bytes(preview))
    with clipforge.Index.open(tmp_path / "db", model) as index:
        report = index.sync([folder])
        assert (report.added, report.failed) == (3, [])
        # the RAW file is embedded from its embedded JPEG preview, not from raw sensor data
        expected = embed_images(model, [Image.open(io.BytesIO(jpeg_bytes(preview)))])
        np.testing.assert_allclose(_vector(index, dng), expected.embeddings[0], atol=1e-6)
        for path in (heic, avif):  # decoded by pillow-heif / Pillow's AVIF plugin
            decoded = embed_images(model, [open_photo(path)]).embeddings[0]
            np.testing.assert_allclose(_vector(index, path), decoded, atol=1e-6)
    decoded = np.asarray(open_photo(heic), np.int16)
    assert np.abs(decoded - pixels(1, smooth=True)).mean() < 8  # lossy, but the same picture


def test_raw_without_preview_is_an_error_naming_the_file(tmp_path, model):
    bad = write_dng(tmp_path / "p" / "broken.dng", b"not a jpeg", with_preview=True)
    with clipforge.Index.open(tmp_path / "db", model) as index:
        report = index.sync([tmp_path / "p"])
        assert report.added == 0
        [(path, reason)] = index.errors()
    assert path == str(bad) and ("RAW preview" in reason or "not a recognised" in reason)


@pytest.mark.parametrize(
    ("module", "suffix", "package"),
    [("pillow_heif", ".heic", "pillow-heif"), ("rawpy", ".dng", "rawpy")],
)
def test_missing_plugin_is_recorded_then_retried(tmp_path, model, monkeypatch, module, suffix, package):
    folder = tmp_path / "p"
    target = folder / f"photo{suffix}"
    if suffix == ".heic":
        write_heic(target, seed=5)
    else:
        write_dng(target, jpeg_bytes(pixels(5, (64, 48))))
    write_photo(folder / "ok.jpg", Shot(), seed=6)
    try:
        with clipforge.Index.open(tmp_path / "db", model) as index:
            with monkeypatch.context() as patch:
                patch.setitem(sys.modules, module, None)  # `import module` raises ImportError
                _clear_plugin_caches()
                report = index.sync([folder])
            assert report.added == 1
            [(path, reason)] = index.errors()
            assert path == str(target)
            assert f"needs the {package} package" in reason and "clipforge[photos]" in reason
            assert summary_line(index.errors()) == f"skipped: 1 × {reason}"
            _clear_plugin_caches()
            report = index.sync([folder])  # installed now: the recorded file is tried again
            assert (report.added, index.errors()) == (1, [])
    finally:
        _clear_plugin_caches()


def test_cli_lists_skipped_kinds(tmp_path, model, monkeypatch):
    from typer.testing import CliRunner

    from clipforge.cli import app

    folder = tmp_path / "p"
    write_heic(folder / "a.heic", seed=1)
    write_heic(folder / "b.heic", seed=2)
    (folder / "c.jpg").write_bytes(b"not a jpeg")
    ckpt = clipforge.save(model, tmp_path / "tiny")
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    _clear_plugin_caches()
    db = ["--db", str(tmp_path / "db")]
    try:
        indexed = CliRunner().invoke(app, ["index", str(folder), *db, "--model", str(ckpt)])
        listed = CliRunner().invoke(app, ["index", "--errors", *db])
    finally:
        _clear_plugin_caches()
    summary = "skipped: 2 × HEIC/HEIF needs the pillow-heif package: pip install "
    for result in (indexed, listed):
        assert result.exit_code == 0, result.output
        [line] = [line for line in result.output.splitlines() if line.startswith("skipped: ")]
        assert line.startswith(summary) and line.endswith("; 1 × .jpg: not a recognised image format")
    assert listed.stdout.count("needs the pillow-heif package") == 2


@pytest.mark.parametrize("orientation", range(1, 9))
def test_rotated_photo_embeds_as_its_upright_twin(tmp_path, model, orientation):
    # 48 x 40, not square: a quarter turn changes the centre crop
    shot = tmp_path / "camera" / "shot.jpg"
    write_photo(shot, Shot(orientation=orientation), seed=7, quality=95)
    decoded = np.asarray(Image.open(shot).convert("RGB"))  # the stored pixels, not turned
    twin = tmp_path / "upright" / "twin.png"  # upright by the EXIF spec, lossless
    twin.parent.mkdir()
    Image.fromarray(np.ascontiguousarray(UPRIGHT[orientation](decoded))).save(twin)
    with clipforge.Index.open(tmp_path / "db", model) as index:
        index.sync([shot.parent, twin.parent])
        got, want = _vector(index, shot), _vector(index, twin)
    assert np.abs(got - want).max() <= 1e-5
    # the parity-exact model.preprocess does not turn images: only the index does
    plain = embed_images(model, [shot]).embeddings[0]
    np.testing.assert_allclose(plain, embed_images(model, [Image.fromarray(decoded)]).embeddings[0])
    if orientation != 1:
        assert np.abs(plain - want).max() > 1e-3  # so the check above could fail


def test_exif_date_offset_place_camera(tmp_path):
    path = write_photo(
        tmp_path / "a.jpg",
        Shot("2024:07:01 18:30:00", "+02:00", -33.8568, 151.2153, "Apple", "iPhone 15 Pro", 6),
    )
    meta = photo_meta(path, 0)
    assert meta.taken_source == "exif" and meta.taken_offset == 120
    assert meta.taken_at == datetime(2024, 7, 1, 16, 30, tzinfo=timezone.utc).timestamp()
    assert meta.taken == "2024-07-01T18:30:00+02:00"
    assert meta.lat == pytest.approx(-33.8568, abs=1e-6)
    assert meta.lon == pytest.approx(151.2153, abs=1e-6)
    assert (meta.camera, meta.orientation) == ("Apple iPhone 15 Pro", 6)


def test_exif_without_offset_and_file_time_fallback(tmp_path):
    local = photo_meta(write_photo(tmp_path / "b.jpg", Shot("2023:12:31 23:59:59")), 0)
    assert (local.taken_source, local.taken_offset, local.taken) == (
        "exif-local", None, "2023-12-31T23:59:59",
    )  # fmt: skip
    mtime = 1_700_000_000
    fallback = photo_meta(write_photo(tmp_path / "c.png", Shot(), mtime=mtime), mtime * 10**9)
    offset = datetime.fromtimestamp(mtime).astimezone().utcoffset() or timedelta()
    assert (fallback.taken_source, fallback.taken_at) == ("file", mtime)
    assert fallback.taken_local == mtime + offset.total_seconds()
    assert (fallback.lat, fallback.camera) == (None, None)


def test_heic_and_avif_exif_is_read(tmp_path):
    shot = Shot("2022:05:05 05:05:05", "-07:00", 48.8584, 2.2945, "Google", "Pixel 8")
    for path in (write_heic(tmp_path / "a.heic", 1, shot), write_photo(tmp_path / "b.avif", shot)):
        meta = photo_meta(path, 0)
        assert (meta.taken, meta.camera) == ("2022-05-05T05:05:05-07:00", "Google Pixel 8")
        assert (round(meta.lat, 4), round(meta.lon, 4)) == (48.8584, 2.2945)


def test_missing_avif_plugin_names_pillow(tmp_path, model, monkeypatch):
    avif = write_photo(tmp_path / "p" / "a.avif", Shot(make="Google"), seed=3)
    real_check = photos.features.check
    try:
        with monkeypatch.context() as patch:  # an old Pillow without AVIF, no pillow-avif-plugin
            patch.setattr(photos.features, "check", lambda name: name != "avif" and real_check(name))
            patch.setitem(sys.modules, "pillow_avif", None)
            _clear_plugin_caches()
            with clipforge.Index.open(tmp_path / "db", model) as index:
                index.sync([tmp_path / "p"])
                [(path, reason)] = index.errors()
        assert path == str(avif)
        assert reason.startswith("AVIF needs the pillow>=11.3 package: pip install 'clipforge[photos]'")
    finally:
        _clear_plugin_caches()
