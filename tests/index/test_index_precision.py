"""An index records the precision it was built at; queries at another one are refused
unless allowed (int8 vectors must not be mixed with fp32 ones silently)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.embedding import embed_images, embed_texts
from clipforge.errors import UsageError
from clipforge.index import PrecisionMismatchError
from clipforge.quantization import quantize
from tests.conftest import tiny_model
from tests.index_helpers import write_images


def test_int8_index_embeds_and_queries_in_int8_and_refuses_fp32(tmp_path):
    model = tiny_model()
    images = [str(p) for p in write_images(tmp_path / "photos", 4)]
    db = tmp_path / "db"
    with clipforge.Index.open(db, model, precision="int8") as index:
        assert index.precision == "int8"
        index.add(images)
        ids, stored = index.meta.vectors(None, index._dim)
        hits = index.search("a red square", k=4)
    expected = embed_images(model, images, precision="int8").embeddings
    np.testing.assert_allclose(stored, expected, atol=1e-6)
    assert not np.allclose(stored, embed_images(model, images).embeddings, atol=1e-6)
    query = embed_texts(model, ["a red square"], precision="int8")[0]
    assert hits[0].score == pytest.approx(float((expected @ query).max()), abs=1e-5)

    with pytest.raises(PrecisionMismatchError, match="built at precision int8; querying it at fp32"):
        clipforge.Index.open(db, model, precision="fp32")
    with clipforge.Index.open(db, model) as index:  # None: the recorded precision
        assert index.precision == "int8"
    with clipforge.Index.open(db, model, precision="fp32", allow_precision_mismatch=True) as index:
        assert index.precision == "fp32"
    with pytest.raises(UsageError, match="takes the fp32 model and precision='int8'"):
        clipforge.Index.open(db, quantize(model))


def test_an_index_without_a_record_is_fp32(tmp_path):
    model = tiny_model()
    with clipforge.Index.open(tmp_path / "db", model) as index:
        assert index.precision == "fp32"
        index.meta.db.execute("DELETE FROM meta WHERE key = 'precision'")  # an older index
        index.meta.db.commit()
    with pytest.raises(PrecisionMismatchError):
        clipforge.Index.open(tmp_path / "db", model, precision="int8")


def test_search_cli_refuses_the_mismatch_in_one_line(tmp_path):
    model_dir = tmp_path / "model"
    clipforge.save(tiny_model(), model_dir)
    photos = write_images(tmp_path / "photos", 2)[0].parent
    runner = CliRunner()
    db = str(tmp_path / "db")
    result = runner.invoke(app, ["index", str(photos), "--db", db, "-m", str(model_dir),
                                 "--precision", "int8", "--workers", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "int8 vs fp32: image cosine" in result.output
    result = runner.invoke(app, ["search", "a cat", "--db", db, "--precision", "fp32"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--allow-precision-mismatch" in errors[0]
    for extra in ([], ["--precision", "fp32", "--allow-precision-mismatch"]):
        result = runner.invoke(app, ["search", "a cat", "--db", db, "--json", *extra])
        assert result.exit_code == 0, result.output
