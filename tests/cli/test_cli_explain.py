"""``clipforge explain`` and the service's ``/explain/{id}`` overlay."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.serve import create_app
from tests.conftest import tiny_model
from tests.index_helpers import write_images

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return clipforge.save(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((45, 70, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_explain_writes_an_overlay_png_of_the_images_size(checkpoint, photo, tmp_path):
    out = tmp_path / "out" / "overlay.png"
    result = runner.invoke(app, ["explain", str(photo), "--text", "a dog", "-o", str(out),
                                 "--model", str(checkpoint), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (70, 45)
    row = json.loads(result.stdout)["maps"][0]
    assert row["text"] == "a dog" and 0 <= row["peak"][0] < 70 and 0 <= row["peak"][1] < 45


def test_explain_several_texts_need_a_pattern(checkpoint, photo, tmp_path):
    args = ["explain", str(photo), "-t", "a dog", "-t", "a cat", "--model", str(checkpoint),
            "--method", "gradcam"]  # fmt: skip
    assert runner.invoke(app, [*args, "-o", str(tmp_path / "o.png")]).exit_code == 2
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "o_{i}.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o_0.png").is_file() and (tmp_path / "o_1.png").is_file()


def test_explain_unknown_method_is_one_line_exit_2(checkpoint, photo, tmp_path):
    result = runner.invoke(app, ["explain", str(photo), "-t", "x", "--method", "nope",
                                 "-o", str(tmp_path / "o.png"), "--model", str(checkpoint)])  # fmt: skip
    assert result.exit_code == 2 and "unknown heat-map method 'nope'" in result.output


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    write_images(root / "photos", 3)
    index = clipforge.Index.open(root / "db", tiny_model())
    index.sync([root / "photos"])
    return TestClient(create_app(index)), index


def test_explain_endpoint_returns_a_png_overlay_of_an_indexed_image(client):
    http, index = client
    image_id = int(index.meta.all_ids()[0])
    row = index.meta.get(image_id)
    response = http.get(f"/explain/{image_id}", params={"q": "a red square"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (row.width, row.height)


@pytest.mark.parametrize(
    ("url", "status"),
    [("/explain/999999?q=x", (404,)), ("/explain/..%2Fsecret?q=x", (404, 422)),
     ("/explain/-1?q=x", (404,)), ("/explain/1", (422,)), ("/explain/1?q=x&method=nope", (422,))],
)  # fmt: skip
def test_explain_endpoint_refuses_unknown_ids_and_bad_queries(client, url, status):
    response = client[0].get(url)
    assert response.status_code in status
    assert response.headers["content-type"] != "image/png"


def test_search_page_links_results_to_their_explanation(client):
    page = client[0].get("/").text
    assert "/explain/${id}?" in page and "why?" in page
