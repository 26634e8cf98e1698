"""``clipforge index`` / ``clipforge search`` on a tiny saved checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from tests.conftest import perturb_, tiny_model
from tests.index_helpers import write_images

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    photos = root / "photos"
    files = write_images(photos, 10)
    shutil.copy(files[0], photos / "copy.png")
    (photos / "bad.jpg").write_bytes(b"nope")
    ckpt = clipforge.save(tiny_model(), root / "tiny")
    result = runner.invoke(
        app, ["index", str(photos), "--db", str(root / "db"), "--model", str(ckpt), "--json"]
    )
    assert result.exit_code == 0, result.output
    return root, ckpt, json.loads(result.stdout)


def test_index_reports_and_lists_errors(built):
    root, _, out = built
    assert out["report"]["added"] == 10 and out["report"]["duplicates"] == 1
    assert out["index"]["images"] == 10 and out["index"]["store"]["kind"] == "flat"
    errors = runner.invoke(app, ["index", "--db", str(root / "db"), "--errors"])
    assert errors.exit_code == 0 and "bad.jpg\tnot a recognised image format" in errors.stdout


def test_search_uses_the_recorded_model(built):
    root, ckpt, _ = built
    result = runner.invoke(app, ["search", "a cat", "--db", str(root / "db"), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    model = clipforge.load(ckpt)
    index = clipforge.Index.open(root / "db", model)
    assert [h["id"] for h in hits] == [h.id for h in index.search("a cat", k=3)]
    similar = runner.invoke(
        app, ["search", "--image", hits[0]["path"], "--db", str(root / "db"), "--json"]
    )
    assert json.loads(similar.stdout)[0]["path"] == hits[0]["path"]
    dupes = runner.invoke(
        app, ["search", "--duplicates", "--threshold", "0.9999", "--db", str(root / "db"), "--json"]
    )
    assert [len(g) for g in json.loads(dupes.stdout)] == [2]


def test_search_with_another_model_is_refused(built, tmp_path):
    root, _, _ = built
    other = clipforge.save(perturb_(tiny_model(), seed=4), tmp_path / "other")
    result = runner.invoke(
        app, ["search", "a cat", "--db", str(root / "db"), "--model", str(other)]
    )
    assert result.exit_code == 2
    assert "built with model id" in result.output
