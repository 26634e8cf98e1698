"""Multilingual evaluation: a retrieval table with a ``language`` column is also scored per
language (equal to recall computed independently on each language's subset), shown as rows
by ``clipforge eval zeroshot_retrieval`` and ``clipforge eval compare``; zero-shot templates
and class names in other languages are given as files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.eval import evaluate_detailed
from clipforge.eval.rank_metrics import retrieval_recall

from ..conftest import tiny_model

#: (image, caption, language): four images, three languages, not every image in each
ROWS = [
    (0, "a red square", "en"), (0, "ein rotes Quadrat", "de"), (0, "赤い四角", "ja"),
    (1, "a green circle", "en"), (1, "ein grüner Kreis", "de"),
    (2, "a blue triangle", "en"), (2, "青い三角", "ja"), (2, "blue shape", "en"),
    (3, "ein gelber Stern", "de"), (3, "黄色い星", "ja"),
]  # fmt: skip


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    path = tmp_path / "captions.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "caption", "language"])
        writer.writerows((tmp_path / f"{i}.png", text, lang) for i, text, lang in ROWS)
    return path


def test_per_language_metrics_equal_each_subsets_recall(table):
    model = tiny_model()
    data = {"kind": "csv", "path": str(table)}
    out = evaluate_detailed("zeroshot_retrieval", model, {"ks": [1, 2]}, data)
    groups = out.details["per_language"]
    assert sorted(groups) == ["de", "en", "ja"]
    directory = table.parent
    for language, group in groups.items():
        rows = [(i, text) for i, text, lang in ROWS if lang == language]
        images = sorted({i for i, _ in rows})
        image_emb = clipforge.embed_images(model, [directory / f"{i}.png" for i in images])
        text_emb = clipforge.embed_texts(model, [text for _, text in rows])
        owners = [[t for t, (i, _) in enumerate(rows) if i == image] for image in images]
        want = retrieval_recall(image_emb.embeddings, text_emb, owners, ks=(1, 2))
        got = {k: v for k, v in group["metrics"].items() if "_R@" in k}
        assert got == pytest.approx(want, abs=1e-9), language
        assert group["counts"] == {"images": len(images), "texts": len(rows)}
    assert out.counts["texts"] == len(ROWS)  # the overall row still uses every caption


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, ["eval", *args, "--workers", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_reports_language_rows(table, tmp_path):
    model_dir = clipforge.save(tiny_model(), tmp_path / "model")
    out = tmp_path / "results.json"
    printed = _cli("zeroshot_retrieval", "-m", str(model_dir), "--data", str(table), "-o", str(out))
    assert "language ja (images=3, texts=3)" in printed
    record = json.loads(out.read_text())
    assert sorted(record["details"]["per_language"]) == ["de", "en", "ja"]
    result = CliRunner().invoke(app, [
        "eval", "compare", "--task", "zeroshot_retrieval", "-m", str(model_dir),
        "--data", str(table), "-o", str(tmp_path / "table.csv"),
    ], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    with (tmp_path / "table.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["language"] for r in rows] == ["all", "de", "en", "ja"]
    by_language = {r["language"]: r for r in rows}
    ja = record["details"]["per_language"]["ja"]["metrics"]["text_to_image_R@1"]
    assert float(by_language["ja"]["text_to_image_R@1"]) == pytest.approx(ja)


def test_tables_without_languages_keep_their_columns(table, tmp_path):
    plain = tmp_path / "plain.csv"
    with table.open(encoding="utf-8") as f, plain.open("w", newline="", encoding="utf-8") as g:
        writer = csv.writer(g)
        for row in csv.reader(f):
            writer.writerow(row[:2])
    out = evaluate_detailed(
        "zeroshot_retrieval", tiny_model(), {}, {"kind": "csv", "path": str(plain)}
    )
    assert "per_language" not in out.details
    from clipforge.eval.results import table_rows

    columns, rows = table_rows([{"model": "m", "dataset": "d", "task": "t",
                                 "metrics": out.metrics, "details": out.details}])  # fmt: skip
    assert "language" not in columns and len(rows) == 1


def test_templates_and_class_names_in_another_language_come_from_files(tmp_path):
    """German prompts and class names as files (UTF-8, one per line) give the classifier the
    same metrics as the same prompts given inline."""
    root = tmp_path / "classes"
    rng = np.random.default_rng(1)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for j in range(2):
            pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{j}.png")
    templates = ["ein Foto von {c}.", "ein verschwommenes Bild einer {c}."]
    names = ["Katze", "Hündchen"]
    (tmp_path / "de.txt").write_text("# deutsche Vorlagen\n" + "\n".join(templates), "utf-8")
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n", "utf-8")
    model, data = tiny_model(), {"kind": "folder", "path": str(root)}
    from_files = evaluate_detailed(
        "zeroshot_classification", model,
        {"templates": str(tmp_path / "de.txt"), "classnames": str(tmp_path / "names.txt")}, data,
    )  # fmt: skip
    inline = evaluate_detailed(
        "zeroshot_classification", model, {"templates": templates, "classnames": names}, data
    )
    english = evaluate_detailed("zeroshot_classification", model, {"templates": "simple"}, data)
    assert from_files.metrics == inline.metrics
    assert from_files.details["n_prompts"] == 4
    assert from_files.details != english.details  # the prompts did change the classifier
