"""``serve`` at int8: the text tower's int8 copy is made (and measured) when the app is
created, not in the first batch of queries; the serve load test (``benchmarks/search.py
--serve-precision int8``) builds and serves its index at int8."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

import clipforge
import clipforge.quantization as quantization
from clipforge.embedding import embed_images, embed_texts
from clipforge.serve import ServeConfig, create_app
from tests.conftest import REPO, tiny_model
from tests.index_helpers import write_images


@pytest.fixture()
def quantize_calls(monkeypatch) -> list[int]:
    """How many int8 copies get made (each one is measured on the calibration set)."""
    calls: list[int] = []
    real = quantization.quantize

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(quantization, "quantize", counted)
    return calls


def test_an_int8_index_is_served_by_the_int8_copy_made_up_front(tmp_path, quantize_calls):
    images = [str(p) for p in write_images(tmp_path / "photos", 4)]
    with clipforge.Index.open(tmp_path / "db", tiny_model(), precision="int8") as index:
        index.add(images)
    model = tiny_model()  # a new process's model: no int8 copy yet
    before = len(quantize_calls)
    with clipforge.Index.open(tmp_path / "db", model) as index:
        client = TestClient(create_app(index))
        assert len(quantize_calls) == before + 1  # made with the app, before any query
        hits = client.get("/search", params={"q": "a red square", "k": 4}).json()["results"]
    assert len(quantize_calls) == before + 1  # the query reused it
    vectors = embed_images(model, images, precision="int8").embeddings
    query = embed_texts(model, ["a red square"], precision="int8")[0]
    assert hits[0]["score"] == pytest.approx(float((vectors @ query).max()), abs=1e-5)


def test_a_float_index_served_at_fp32_makes_no_int8_copy(tmp_path, quantize_calls):
    with clipforge.Index.open(tmp_path / "db", tiny_model()) as index:
        create_app(index, ServeConfig())
    assert quantize_calls == []


def test_the_serve_load_test_index_and_server_at_int8(tmp_path, monkeypatch, quantize_calls):
    """What ``bench_serve`` and its server child do, in process with a tiny model."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    search = importlib.import_module("search")
    search._fake_index(300, tiny_model(), tmp_path, "int8").close()
    with clipforge.Index.open(tmp_path, tiny_model(), precision="int8") as index:  # the child
        assert index.precision == "int8"
        client = TestClient(create_app(index, ServeConfig(precision="int8")))
        made = len(quantize_calls)
        response = client.get("/search", params={"q": "a photo of a dog", "k": 20})
    assert response.status_code == 200 and len(response.json()["results"]) == 20
    assert made == 1 and len(quantize_calls) == 1
    scores = [hit["score"] for hit in response.json()["results"]]
    assert np.all(np.diff(scores) <= 0)
