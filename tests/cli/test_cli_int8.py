"""``--precision int8`` on the model commands: measured against fp32 at load (reported on
stderr, in ``--json``), ``--max-degradation`` refuses in one line, ``eval compare`` puts
fp32 and int8 side by side."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app

from ..conftest import tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "model"
    clipforge.save(tiny_model(), out)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i, colour in enumerate([(250, 0, 0), (0, 0, 250), (0, 200, 0)]):
        Image.new("RGB", (40, 36), colour).save(folder / f"p{i}.png")
    return folder


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_embed_int8_is_close_to_fp32_and_reports_its_cosine(tmp_path, tiny_dir, photos):
    out = {}
    for precision in ("fp32", "int8"):
        result = run("embed", photos, "-o", tmp_path / f"{precision}.npy", "-m", tiny_dir,
                     "--precision", precision, "--workers", "0")  # fmt: skip
        assert result.exit_code == 0, result.output
        out[precision] = np.load(tmp_path / f"{precision}.npy")
    assert "int8 vs fp32: image cosine 0.99" in result.output
    cos = (out["fp32"] * out["int8"]).sum(axis=1)
    assert (cos >= 0.99).all() and not np.array_equal(out["fp32"], out["int8"])


def test_classify_json_carries_the_report_and_max_degradation_refuses(tiny_dir, photos):
    result = run("classify", photos, "-l", "red,blue", "-m", tiny_dir, "--precision", "int8",
                 "--json", "--workers", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{"):])
    assert payload["quantization"]["precision"] == "int8"
    assert payload["quantization"]["image_cosine"] >= 0.99
    result = run("classify", photos, "-l", "red,blue", "-m", tiny_dir, "--precision", "int8",
                 "--max-degradation", "0")  # fmt: skip
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1
    assert "int8 model refused: degradation" in errors[0]


def test_eval_compare_puts_precisions_side_by_side(tmp_path, tiny_dir):
    table = tmp_path / "table.md"
    result = run("eval", "compare", "--task", "procedural_zeroshot", "-m", tiny_dir,
                 "--precision", "fp32", "--precision", "int8", "--option", "image_size=32",
                 "--option", "n_per_class=1", "--results-dir", tmp_path / "runs", "-o", table)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| model | pretrained | dataset | task | precision | zeroshot_")
    assert [line.split("|")[5].strip() for line in lines[2:]] == ["fp32", "int8"]
    runs = {p.stem.rsplit("-", 1)[1]: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}
    assert runs["int8"]["quantization"]["text_cosine"] >= 0.99 and "quantization" not in runs["fp32"]
