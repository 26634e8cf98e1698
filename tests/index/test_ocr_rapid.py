"""Text in images with the real OCR model (rapidocr_onnxruntime, PP-OCRv4 ONNX) on images
with rendered words: the words come back, FTS5 finds them, fusion puts the image with the
word first where the tiny random CLIP does not; offline (no socket may connect). Slow tier:
the model reads ~0.4-1 s per image on 2 cores."""

from __future__ import annotations

import json
import socket
from importlib import util
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from tests.conftest import tiny_model
from tests.index_helpers import write_images

pytestmark = pytest.mark.slow

SCREENS = {  # file name -> the lines rendered into it
    "note.png": ["walrus", "pepper"],
    "ticket.png": ["lantern 4821"],
    "poster.png": ["glacier", "orchid"],
}


def render(path: Path, lines: list[str], size: tuple[int, int] = (320, 150)) -> Path:
    """Black words on white with Pillow's built-in scalable font (Pillow >= 10.1)."""
    font = ImageFont.load_default(size=26)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((14, 16 + 48 * row), line, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("ocr")
    photos = root / "photos"
    write_images(photos, 9)  # noise without text
    for name, lines in SCREENS.items():
        render(photos / name, lines)
    return root, photos


@pytest.fixture()
def offline(monkeypatch):
    """Any attempt to reach the network fails the test (the models ship in the wheel);
    local (AF_UNIX) sockets, which multiprocessing uses, stay allowed."""
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(original):
        def call(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                raise AssertionError(f"OCR tried to connect to {address}")
            return original(self, address)

        return call

    monkeypatch.setattr(socket.socket, "connect", guard(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(connect_ex))


def test_the_wheel_ships_the_onnx_models():
    spec = util.find_spec("rapidocr_onnxruntime")
    assert spec is not None and spec.origin is not None
    models = sorted(p.name for p in (Path(spec.origin).parent / "models").glob("*.onnx"))
    assert models == [
        "ch_PP-OCRv4_det_infer.onnx",
        "ch_PP-OCRv4_rec_infer.onnx",
        "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    ]


def test_ocr_reads_the_words_and_fusion_puts_them_first(library, offline):
    root, photos = library
    index = clipforge.Index.open(root / "db", tiny_model())
    report = index.sync([photos], ocr=True)
    assert report.ocr_read == 12 and report.ocr_failed == []
    assert index.info()["ocr"]["with_text"] == 3
    ids = {Path(p).name: i for p, i in index.meta.db.execute("SELECT path, id FROM images")}
    clip_first = 0
    for name, lines in SCREENS.items():
        for word in " ".join(lines).split():
            if len(word) < 3:
                continue
            only = index.search(word, k=5, ocr="only")
            assert [h.id for h in only] == [ids[name]], (word, only)
            assert only[0].text is not None and word in only[0].text.text.lower()
            fused = index.search(word, k=5)
            assert fused[0].id == ids[name], word
            clip_first += index.search(word, k=1, ocr="off")[0].id == ids[name]
    assert clip_first <= 2  # of 6 words: the random CLIP alone misses most of them


def test_cli_index_ocr_then_search(library, offline, tmp_path):
    _, photos = library
    ckpt = clipforge.save(tiny_model(), tmp_path / "tiny")
    db = str(tmp_path / "db")
    runner = CliRunner()
    built = runner.invoke(app, ["index", str(photos), "--db", db, "--model", str(ckpt), "--ocr"])
    assert built.exit_code == 0, built.output
    assert "read text in 12 images" in built.stdout
    found = runner.invoke(app, ["search", "glacier", "--db", db, "--ocr-only", "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert [Path(h["path"]).name for h in hits] == ["poster.png"]
    text = hits[0]["ocr"]["text"]
    assert [text[a:b].lower() for a, b in hits[0]["ocr"]["spans"]] == ["glacier"]
    render(photos / "later.png", ["saffron"])  # --ocr is remembered by later runs
    again = runner.invoke(app, ["index", str(photos), "--db", db, "--json"])
    assert json.loads(again.stdout)["report"]["ocr_read"] == 1
    (photos / "later.png").unlink()
