"""Text in images (fast tier): FTS5 side table, reciprocal-rank fusion, ocr=auto|only|off in
the Python API, the CLI and the HTTP API; a scripted OCR engine stands in for the model
(tests/index/test_ocr_rapid.py runs the real one on rendered words)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.errors import UsageError
from clipforge.index import Filters
from clipforge.index.fusion import RRF_K, reciprocal_rank_fusion
from clipforge.index.ocr import (
    NoOcrTextError,
    OcrLine,
    OcrUnavailableError,
    fts_query,
)
from clipforge.serve import ServeConfig, create_app
from tests.conftest import tiny_model
from tests.index_helpers import write_image

runner = CliRunner()


class ScriptedEngine:
    """Returns the lines scripted for an image, recognised by its width (each fixture
    image has its own); records what it was asked to read."""

    name = "scripted"

    def __init__(self, script: dict[int, list[str]], fail: set[int] = frozenset()) -> None:
        self.script, self.fail, self.seen = script, fail, []

    def __call__(self, image: Image.Image) -> list[OcrLine]:
        self.seen.append(image.width)
        if image.width in self.fail:
            raise RuntimeError("engine exploded")
        lines = self.script.get(image.width, [])
        return [OcrLine(t, (10.0, 10.0 + 20 * i, 110.0, 26.0 + 20 * i), 0.9) for i, t in enumerate(lines)]  # fmt: skip


WIDTH = 40  # image i is (WIDTH + i) x 40 pixels


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _library(folder, n: int = 12):
    return [write_image(folder / f"img{i:02d}.png", seed=i, size=(WIDTH + i, 40)) for i in range(n)]


def _clip_order(index, query: str) -> list[int]:
    return [h.id for h in index.search(query, k=len(index), ocr="off")]


@pytest.fixture()
def built(tmp_path, model):
    """12 images; the one CLIP ranks last for "quartz" says "invoicequartz total / zebra",
    another "Granite Zebra"; no other has text."""
    photos = tmp_path / "photos"
    files = _library(photos)
    index = clipforge.Index.open(tmp_path / "db", model)
    index.sync([photos])
    last = index.meta.get(_clip_order(index, "quartz")[-1])
    assert last is not None
    widths = {f: Image.open(f).width for f in files}
    glued = widths[next(f for f in files if str(f) == last.path)]
    other = WIDTH + (0 if glued != WIDTH else 1)
    engine = ScriptedEngine({glued: ["invoicequartz total", "zebra"], other: ["Granite Zebra"]})
    report = index.sync([photos], ocr=engine)
    assert (report.ocr_read, report.ocr_failed) == (12, [])
    ids = {Image.open(p).width: i for p, i in index.meta.db.execute("SELECT path, id FROM images")}
    return index, photos, engine, ids[glued], ids[other]


def test_fts_query_keeps_words_of_three_characters_or_more():
    assert fts_query("a Quartz-invoice on the 2nd!") == '"quartz" AND "invoice" AND "the" AND "2nd"'
    assert fts_query(["zebra", "Zebra crossing"]) == '"zebra" AND "crossing"'
    assert fts_query("a b 42") is None and fts_query(None) is None and fts_query("") is None


def test_reciprocal_rank_fusion_is_cormacks_formula():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 4]])
    expected = {1: 1 / 61, 2: 1 / 62, 3: 1 / 63 + 1 / 61, 4: 1 / 62}
    assert RRF_K == 60
    assert [i for i, _ in fused] == [3, 1, 2, 4]  # 2 and 4 tie: the earlier ranking's first
    assert {i: s for i, s in fused} == pytest.approx(expected, rel=1e-12)


def test_fusion_ranks_the_image_with_the_word_first_where_clip_does_not(built):
    index, _, _, glued, _ = built
    clip = _clip_order(index, "quartz")
    assert clip[-1] == glued  # CLIP alone: last of 12
    hits = index.search("quartz", k=5)
    assert hits[0].id == glued and hits[0].text is not None
    clip_rank = {id_: r for r, id_ in enumerate(clip, start=1)}
    matched = [h.id for h in index.search("quartz", k=12, ocr="only")]
    text_rank = {id_: r for r, id_ in enumerate(matched, start=1)}
    for hit in hits:  # each hit's rrf is the formula over both rankings; cosine kept
        want = 1 / (RRF_K + clip_rank[hit.id]) + (
            1 / (RRF_K + text_rank[hit.id]) if hit.id in text_rank else 0.0
        )
        assert hit.rrf == pytest.approx(want, rel=1e-12)
    plain = {h.id: h.score for h in index.search("quartz", k=12, ocr="off")}
    assert all(h.score == pytest.approx(plain[h.id], abs=1e-5) for h in hits)
    assert [h.rrf for h in hits] == sorted((h.rrf for h in hits), reverse=True)


def test_ocr_only_and_no_ocr(built):
    index, _, _, glued, other = built
    only = index.search("ZEBRA", k=10, ocr="only")
    assert {h.id for h in only} == {glued, other} and all(h.rrf is None for h in only)
    both = index.search("zebra quartz", k=10, ocr="only")  # every word must occur
    assert [h.id for h in both] == [glued]
    assert (
        index.search("zebra quartz", k=10, ocr="off")
        == index.search_vectors(_vector(index, "zebra quartz"), k=10)[0]
    )
    assert all(h.text is None and h.rrf is None for h in index.search("quartz", ocr="off"))
    assert index.search("xylophone", k=10, ocr="only") == []


def _vector(index, text):
    from clipforge.index.querying import query_vector

    return query_vector(index.model, text, None, None)[None]


def test_match_details_spans_and_boxes(built):
    index, _, _, glued, _ = built
    hit = next(h for h in index.search("quartz zebra", k=3) if h.id == glued)
    assert hit.text is not None
    text, spans = hit.text.text, hit.text.spans
    assert text == "invoicequartz total\nzebra"
    assert [text[a:b].lower() for a, b in spans] == ["quartz", "zebra"]
    # "quartz" is characters 7..13 of a 19-character line boxed at x 10..110, y 10..26
    assert hit.text.boxes[0] == pytest.approx((10 + 100 * 7 / 19, 10, 10 + 100 * 13 / 19, 26))
    assert hit.text.boxes[1] == pytest.approx((10, 30, 110, 46))
    assert (hit.text.width, hit.text.height) == (index.meta.get(glued).width, 40)
    assert hit.to_dict()["ocr"]["spans"] == [[7, 13], [20, 25]]


def test_filters_restrict_the_text_side_too(built):
    index, _, _, glued, other = built
    path = index.meta.get(glued).path
    kept = Filters(path_glob=f"*{path[-9:]}")  # only the glued image's name
    assert [h.id for h in index.search("quartz", k=5, filters=kept, ocr="only")] == [glued]
    dropped = Filters(path_glob="*/img_none*")
    assert index.search("quartz", k=5, filters=dropped) == []
    # min_score drops CLIP candidates only: a literal text match stays
    high = Filters(min_score=0.99)
    assert {h.id for h in index.search("zebra", k=5, filters=high)} == {glued, other}


def test_text_rows_follow_the_images(built):
    index, photos, _, glued, other = built
    db = index.meta.db
    engine = ScriptedEngine({})
    glued_path = index.meta.get(glued).path
    write_image(photos / "img_new.png", seed=99, size=(90, 40))
    report = index.sync([photos], ocr=engine)
    assert report.ocr_read == 1 and engine.seen == [90]  # only the new image is read
    os.rename(glued_path, photos / "moved.png")  # a move: same id, text kept
    index.sync([photos], ocr=engine)
    assert [h.id for h in index.search("quartz", ocr="only")] == [glued]
    other_row = index.meta.get(other)
    assert other_row is not None
    other_path = other_row.path
    write_image(Path(other_path), seed=500, size=(other_row.width, 40))  # new bytes: new id
    index.sync([photos], ocr=ScriptedEngine({other_row.width: ["basalt"]}))
    assert [h.id for h in index.search("zebra", k=10, ocr="only")] == [glued]  # old text gone
    assert [index.meta.get(h.id).path for h in index.search("basalt", ocr="only")] == [other_path]
    (photos / "moved.png").unlink()
    index.sync([photos], ocr=engine)
    assert index.search("quartz", k=10, ocr="only") == []
    count = db.execute("SELECT COUNT(*) FROM ocr_lines").fetchone()[0]
    assert count == len(index) == db.execute("SELECT COUNT(*) FROM images").fetchone()[0]


def test_engine_failures_are_reported_once_and_the_image_stays(tmp_path, model):
    files = _library(tmp_path / "p", 3)
    index = clipforge.Index.open(tmp_path / "db", model)
    report = index.sync([tmp_path / "p"], ocr=ScriptedEngine({}, fail={WIDTH + 1}))
    assert len(index) == 3 and report.failed == []
    assert report.ocr_read == 3 and [p for p, _ in report.ocr_failed] == [str(files[1])]
    assert "engine exploded" in report.ocr_failed[0][1]
    again = index.sync([tmp_path / "p"], ocr=ScriptedEngine({}))
    assert again.ocr_read == 0  # recorded (empty): not retried on every run
    off = index.sync([tmp_path / "p"], ocr=False)
    assert off.ocr_read == 0 and index.meta.get_meta("ocr_engine") is None


def test_text_only_queries_need_text(tmp_path, model):
    _library(tmp_path / "p", 2)
    index = clipforge.Index.open(tmp_path / "db", model)
    index.sync([tmp_path / "p"])
    with pytest.raises(NoOcrTextError, match="--ocr"):
        index.search("quartz", ocr="only")
    assert NoOcrTextError.http_status == 409
    assert len(index.search("quartz")) == 2  # auto: plain CLIP search without text
    index.sync([tmp_path / "p"], ocr=ScriptedEngine({WIDTH: ["quartz"]}))
    with pytest.raises(UsageError, match="3 or more characters"):
        index.search("ab", ocr="only")
    with pytest.raises(UsageError, match="auto, only, off"):
        index.search("quartz", ocr="sometimes")  # type: ignore[arg-type]


def test_a_missing_ocr_package_is_named(tmp_path, model, monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # import fails
    _library(tmp_path / "p", 2)
    index = clipforge.Index.open(tmp_path / "db", model)
    with pytest.raises(OcrUnavailableError, match="rapidocr_onnxruntime.*clipforge\\[ocr\\]"):
        index.sync([tmp_path / "p"], ocr=True)
    assert len(index) == 0  # refused before embedding anything
    ckpt = clipforge.save(model, tmp_path / "tiny")
    args = ["index", str(tmp_path / "p"), "--db", str(tmp_path / "db2"), "--model", str(ckpt)]
    result = runner.invoke(app, [*args, "--ocr"])
    assert result.exit_code == 2
    assert "error:" in result.output and "rapidocr_onnxruntime" in result.output


def test_cli_search_flags(built, tmp_path):
    index, *_, glued, other = built
    db = str(index.path)
    ckpt = str(clipforge.save(index.model, tmp_path / "tiny"))
    index.close()

    def run(*flags, query="quartz"):
        args = ["search", query, "--db", db, "--model", ckpt, "-k", "4", *flags]
        return runner.invoke(app, args)

    only = run("--ocr-only", "--json", query="zebra")
    assert only.exit_code == 0, only.output
    assert {h["id"] for h in json.loads(only.stdout)} == {glued, other}
    fused = json.loads(run("--json").stdout)
    assert fused[0]["id"] == glued and "rrf" in fused[0] and "ocr" in fused[0]
    plain = json.loads(run("--no-ocr", "--json").stdout)
    assert all("ocr" not in h and "rrf" not in h for h in plain)
    assert glued not in [h["id"] for h in plain]
    text = run("--ocr-only")
    assert "text: invoicequartz total / zebra" in text.stdout
    both = run("--ocr-only", "--no-ocr")
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_http_search_ocr_modes(built):
    index, *_, glued, other = built
    client = TestClient(create_app(index, ServeConfig()))
    fused = client.get("/search", params={"q": "quartz", "k": 4}).json()["results"]
    assert fused[0]["id"] == glued
    assert fused[0]["ocr"]["spans"] == [[7, 13]] and len(fused[0]["ocr"]["boxes"]) == 1
    assert fused[0]["thumbnail"] == f"/thumbnails/{glued}"
    only = client.get("/search", params={"q": "zebra", "ocr": "only"}).json()["results"]
    assert {h["id"] for h in only} == {glued, other}
    off = client.get("/search", params={"q": "quartz", "k": 4, "ocr": "off"}).json()["results"]
    assert [h["id"] for h in off] == _clip_order(index, "quartz")[:4]
    assert client.get("/search", params={"q": "quartz", "ocr": "maybe"}).status_code == 422
    assert client.get("/search", params={"q": "ab", "ocr": "only"}).status_code == 400
    assert client.get("/health").json()["ocr"] == {"engine": "scripted", "read": 12, "with_text": 2}


def test_http_text_only_without_text_is_409(tmp_path, model):
    _library(tmp_path / "p", 2)
    index = clipforge.Index.open(tmp_path / "db", model)
    index.sync([tmp_path / "p"])
    client = TestClient(create_app(index, ServeConfig()))
    answer = client.get("/search", params={"q": "quartz", "ocr": "only"})
    assert answer.status_code == 409 and "--ocr" in answer.json()["detail"]
    assert len(client.get("/search", params={"q": "quartz"}).json()["results"]) == 2
    assert np.isfinite([h["score"] for h in client.get("/search?q=x").json()["results"]]).all()
