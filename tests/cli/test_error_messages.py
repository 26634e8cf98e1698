"""The CLI for a newcomer: one-line errors with exit codes, empty runs, safe outputs, and
fault-tolerant similarity/score; plus the API behaviour behind them."""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.cli.common import read_lines, resolve_architecture
from clipforge.embedding import TextTruncatedWarning, embed_texts
from clipforge.preprocess import ImageDecodeError
from clipforge.scoring import clip_score, similarity_matrix

from ..conftest import tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny random model saved as a clipforge checkpoint directory."""
    out = tmp_path_factory.mktemp("tiny") / "model"
    clipforge.save(tiny_model(), out)
    return out


@pytest.fixture
def photos(tmp_path):
    """Two good images and two bad ones (corrupt, missing)."""
    good = []
    for i, colour in enumerate([(250, 0, 0), (0, 0, 250)]):
        path = tmp_path / f"good{i}.png"
        Image.new("RGB", (40, 36), colour).save(path)
        good.append(path)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    return {"good": good, "bad": [corrupt, tmp_path / "missing.jpg"]}


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


# ----------------------------------------------------------------------------- errors
def test_unknown_model_is_one_line_with_suggestion(photos):
    result = run("similarity", "-i", photos["good"][0], "-t", "a cat", "--model", "ViT-B-33")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == error_lines(result)  # one line, no traceback
    assert "unknown architecture" in result.output and "did you mean ViT-B-32" in result.output
    assert "checkpoint file not found" not in result.output


def test_architecture_names_are_case_insensitive_when_unambiguous():
    assert resolve_architecture("vit-b-32") == "ViT-B-32"
    assert resolve_architecture("rn50") == "RN50"
    assert resolve_architecture("ViT-B-33") is None


def test_debug_flag_and_env_show_the_traceback(photos):
    args = ["similarity", "-i", photos["good"][0], "-t", "x", "--model", "ViT-B-33"]
    result = run("--debug", *args)
    assert result.exit_code != 0 and "unknown architecture" in str(result.exception)
    assert result.exception is not None and not isinstance(result.exception, SystemExit)
    result = run(*args, env={"CLIPFORGE_DEBUG": "1"})
    assert result.exception is not None and not isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--weights", "nowhere.pt"], 2, "--weights nowhere.pt: no such file"),
        (["--pretrained", "nosuchtag"], 2, "--pretrained nosuchtag: not a tag of ViT-B-32"),
        (["--device", "tpu9"], 2, "--device: unknown device"),
        (["--device", "cuda:99"], 2, "--device: device 'cuda:99'"),
        (["--precision", "fp8"], 2, "--precision: unknown precision 'fp8'"),
    ],
)
def test_option_mistakes_are_one_line_usage_errors(photos, args, code, message):
    result = run("similarity", "-i", photos["good"][0], "-t", "x", *args)
    assert result.exit_code == code, result.output
    assert message in result.output and len(error_lines(result)) == 1
    assert "Traceback" not in result.output


def test_unreadable_checkpoint_is_a_failed_input(tmp_path, photos):
    latest = tmp_path / "latest"
    latest.write_text("step_1\n")
    result = run("similarity", "-i", photos["good"][0], "-t", "x", "--model", latest)
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and str(latest) in result.output


def test_bad_template_name_is_a_usage_error(tiny_dir, photos):
    result = run("classify", photos["good"][0], "-l", "a,b", "-t", "nosuchset", "--model", tiny_dir)
    assert result.exit_code == 2 and "--templates" in result.output
    assert "unknown template set 'nosuchset'" in result.output


# ----------------------------------------------------------------------------- texts
def test_non_utf8_captions_file_is_one_line_naming_the_file(tmp_path, tiny_dir):
    captions = tmp_path / "captions.txt"
    captions.write_bytes("a caf\xe9\n".encode("latin-1"))
    result = run("embed", "--texts", captions, "-o", tmp_path / "t.npy", "--model", tiny_dir)
    assert result.exit_code == 2
    assert f"--texts {captions}: not UTF-8" in result.output and len(error_lines(result)) == 1
    assert not (tmp_path / "t.npy").exists()


def test_texts_file_splits_on_newlines_only(tmp_path, tiny_dir):
    captions = tmp_path / "captions.txt"
    captions.write_text("one\u2028still one\r\ntwo\x0cstill two\n\n", encoding="utf-8")
    assert read_lines(captions) == ["one\u2028still one", "two\x0cstill two"]
    out = tmp_path / "t.npy"
    result = run("embed", "--texts", captions, "-o", out, "--model", tiny_dir)
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (2, 32)
    ids = (tmp_path / "t.ids.txt").read_text(encoding="utf-8")
    assert ids == "one\u2028still one\ntwo\x0cstill two\n"


def test_long_captions_warn_once_with_the_count():
    model = tiny_model()
    long = "a photo of a very " + "very " * 100 + "long cat"
    with pytest.warns(TextTruncatedWarning, match=r"2 of 3 texts .* context of 77 tokens"):
        embed_texts(model, [long, "a short one", long])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TextTruncatedWarning)
        exact = " ".join(["cat"] * 75)  # 75 words + SOT/EOT: exactly fits
        embed_texts(model, ["short", exact])


# ----------------------------------------------------------------------------- scoring
def test_similarity_api_reports_every_bad_image(photos):
    model = tiny_model()
    items = [photos["good"][0], photos["bad"][0], photos["good"][1], photos["bad"][1]]
    with pytest.raises(ImageDecodeError) as info:
        similarity_matrix(model, items, ["a", "b"])
    assert str(photos["bad"][0]) in str(info.value) and str(photos["bad"][1]) in str(info.value)
    failures: list[tuple[str, str]] = []
    sim = similarity_matrix(model, items, ["a", "b"], failures=failures)
    assert [p for p, _ in failures] == [str(p) for p in photos["bad"]]
    assert np.isnan(sim[[1, 3]]).all() and np.isfinite(sim[[0, 2]]).all()
    clean = similarity_matrix(model, photos["good"], ["a", "b"])
    np.testing.assert_allclose(sim[[0, 2]], clean, atol=1e-6)


def test_clip_score_api_reports_every_bad_image(photos):
    failures: list[tuple[str, str]] = []
    items = [photos["bad"][1], photos["good"][0], photos["bad"][0]]
    scores = clip_score(tiny_model(), items, ["x", "y", "z"], failures=failures)
    assert len(failures) == 2 and np.isnan(scores[[0, 2]]).all() and np.isfinite(scores[1])


def test_similarity_cli_processes_all_writes_plot_and_exits_1(tmp_path, tiny_dir, photos):
    plot = tmp_path / "plot.png"
    images = [photos["good"][0], photos["bad"][0], photos["good"][1], photos["bad"][1]]
    args = [a for p in images for a in ("-i", p)]
    result = run("similarity", *args, "-t", "red", "-t", "blue", "--plot", plot, "--json",
                 "--model", tiny_dir)  # fmt: skip
    assert result.exit_code == 1
    for bad in photos["bad"]:
        assert f"failed {bad}" in result.stderr
    out = json.loads(result.stdout)
    assert out["similarity"][1] == [None, None] and None not in out["similarity"][0]
    assert Image.open(plot).size[0] > 100


def test_score_cli_processes_all_and_exits_1(tiny_dir, photos):
    images = [photos["good"][0], photos["bad"][0], photos["bad"][1]]
    args = [a for p in images for a in ("-i", p)]
    result = run("score", *args, "-t", "a", "-t", "b", "-t", "c", "--json", "--model", tiny_dir)
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["scores"][1:] == [None, None] and out["mean"] == out["scores"][0]
    assert all(f"failed {bad}" in result.stderr for bad in photos["bad"])


# ----------------------------------------------------------------------------- empty runs
def test_empty_folder_warns_writes_empty_output_and_fails(tmp_path, tiny_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    out = tmp_path / "e.npy"
    result = run("embed", empty, "-o", out, "--model", tiny_dir)
    assert result.exit_code == 1 and "no image files" in result.stderr
    assert np.load(out).shape == (0, 32)
    assert (tmp_path / "e.ids.txt").read_text() == ""  # not one blank line
    result = run("classify", empty, "-l", "a,b", "--json", "--model", tiny_dir)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"predictions": [], "failures": []}


def test_quoted_glob_is_expanded_and_an_empty_one_fails(tmp_path, tiny_dir, photos):
    out = tmp_path / "g.npy"
    result = run("embed", tmp_path / "good*.png", "-o", out, "--model", tiny_dir)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.ids.txt").read_text().splitlines() == [str(p) for p in photos["good"]]
    result = run("embed", tmp_path / "*.jpeg", "-o", out, "--model", tiny_dir)
    assert result.exit_code == 1 and "no files match" in result.stderr
    assert np.load(out).shape == (0, 32)


# ----------------------------------------------------------------------------- outputs
def test_parquet_without_pyarrow_is_refused_before_work(tmp_path, tiny_dir, photos, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setattr("clipforge.cli.common.load_model", _no_model)
    result = run("embed", photos["good"][0], "-o", tmp_path / "x.parquet", "--model", tiny_dir)
    assert result.exit_code == 2 and "needs pyarrow" in result.output
    assert not (tmp_path / "x.parquet").exists()


def _no_model(*args, **kwargs):
    raise AssertionError("the model must not be loaded before the output is validated")


def test_unwritable_output_is_refused_before_work(tmp_path, tiny_dir, photos, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    monkeypatch.setattr("clipforge.cli.common.load_model", _no_model)
    result = run("embed", photos["good"][0], "-o", blocker / "out.npy", "--model", tiny_dir)
    assert (
        result.exit_code == 2 and f"--output {blocker / 'out.npy'}: cannot write" in result.output
    )


def test_non_utf8_file_names_keep_their_ids(tmp_path, tiny_dir, photos):
    folder = tmp_path / "names"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.png")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(folder / name)
    Image.new("RGB", (32, 32), (9, 9, 9)).save(folder / "plain.png")
    for out in (tmp_path / "n.npy", tmp_path / "n.parquet"):
        result = run("embed", folder, "-o", out, "--model", tiny_dir)
        assert result.exit_code == 0, result.output
        assert "not valid UTF-8" in result.stderr
    ids = (tmp_path / "n.ids.txt").read_text(encoding="utf-8").splitlines()
    assert ids == [str(folder / "caf\\xe9.png"), str(folder / "plain.png")]
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "n.parquet")["id"].to_pylist() == ids
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # atomic: no leftovers


def test_piped_table_does_not_truncate_paths(tmp_path, tiny_dir):
    deep = tmp_path.joinpath(*(["a_rather_long_directory_name"] * 6))
    deep.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (32, 32), (i * 100, 0, 0)).save(deep / f"photo_{i}.png")
    result = run("classify", deep, "-l", "cat,dog", "--model", tiny_dir)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for i in range(2):
        assert any(str(deep / f"photo_{i}.png") in line for line in lines)


# ----------------------------------------------------------------------------- device/precision
def test_device_and_precision_options_run(tmp_path, tiny_dir, photos):
    outs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.npy"
        result = run("embed", *photos["good"], "-o", out, "--model", tiny_dir,
                     "--device", "cpu", "--precision", precision)  # fmt: skip
        assert result.exit_code == 0, result.output
        outs[precision] = np.load(out)
    cos = (outs["fp32"] * outs["bf16"]).sum(axis=1)
    assert (cos > 0.98).all() and not np.array_equal(outs["fp32"], outs["bf16"])


# ----------------------------------------------------------------------------- onnx
def test_export_onnx_leaves_a_half_model_half(tmp_path):
    from clipforge.onnx import export_onnx

    model = tiny_model().half()
    export_onnx(model, tmp_path / "onnx")
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert (tmp_path / "onnx" / "image_encoder.onnx").is_file()
