"""Evaluator and data-source registries: validation before anything is built, training's
``eval_every`` running the evaluators a config lists, CLIP_benchmark's metric definitions."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.data import sources
from clipforge.data.data_config import DataConfig
from clipforge.data.loader import build_dataset
from clipforge.eval import (
    EVALUATORS,
    classification_metrics,
    evaluate,
    list_evaluators,
    register_evaluator,
    retrieval_recall,
)
from clipforge.train import (
    ConfigError,
    ModelConfig,
    config_from_dict,
    load_config,
    train,
    train_config,
)
from clipforge.train.loop import build_model
from clipforge.zeroshot import ZeroShotClassifier

TINY = {
    "embed_dim": 32,
    "vision": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
               "heads": 2},
    "text": {"context_length": 16, "width": 64, "heads": 2, "layers": 2},
}  # fmt: skip
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 220)}


def base(out: Path, **top: object) -> dict:
    return {
        "model": {"architecture": TINY},
        "batch_size": 6,
        "steps": 2,
        "log_every": 1,
        "checkpoint_every": 100,
        "progress": False,
        "tensorboard": False,
        "output_dir": str(out),
        **top,
    }


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(architecture=TINY)).eval()


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory) -> Path:
    """``root/<colour>/*.png``: 3 classes × 3 images of varied shade and size."""
    root = tmp_path_factory.mktemp("folder")
    for name, (r, g, b) in COLOURS.items():
        (root / name).mkdir()
        for i in range(3):
            size = (36 + 4 * i, 40)
            Image.new("RGB", size, (r, max(g - 30 * i, 0), b)).save(root / name / f"{i}.png")
    return root


def records(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# ----------------------------------------------------------------------------- metrics
def test_classification_metrics_hand_computed():
    scores = np.array(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # label 0: top-1 hit
            [0.5, 0.5, 0.0, 0.0, 0.0, 0.0],  # label 1: tie, lower index wins → top-1 miss
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 1: rank 5 → top-5 hit only
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 0: rank 6 → miss
        ]
    )
    labels = np.array([0, 1, 1, 0])
    metrics = classification_metrics(scores, labels)
    assert metrics["acc1"] == pytest.approx(1 / 4)
    assert metrics["acc5"] == pytest.approx(3 / 4)
    # classes 2-5 have no samples: only classes 0 (1/2) and 1 (0/2) are averaged
    assert metrics["mean_per_class_recall"] == pytest.approx((0.5 + 0.0) / 2)
    few = classification_metrics(scores[:, :3], labels)  # < 5 classes: no acc5
    assert set(few) == {"acc1", "mean_per_class_recall"}


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"data": {"options": {"sizee": 10}}}, r"'data\.options\.sizee'.*did you mean 'size'"),
        ({"data": {"kind": "folderr", "path": "x"}}, r"data\.kind 'folderr'.*did you mean 'folder'.*'csv'"),
        ({"data": {"kind": "csv"}}, r"needs 'data\.path'"),
        ({"data": {"options": {"size": "many"}}}, r"'data\.options\.size'.*an integer"),
        ({"data": {"kind": "folder", "path": "x", "options": {"templtes": "simple"}}},
         r"'data\.options\.templtes'.*did you mean 'templates'"),
        ({"eval": [{"name": "zeroshot_clasification"}]},
         r"evaluator 'zeroshot_clasification'.*did you mean 'zeroshot_classification'"),
        ({"eval": [{"name": "zeroshot_classification", "data": {"kind": "webdataset", "path": "t.tar"}}]},
         r"cannot use data of kind 'webdataset'"),
        ({"eval": [{"name": "zeroshot_retrieval", "data": {"kind": "csv", "path": "t.csv"},
                    "options": {"k": [1]}}]}, r"'eval\.options\.k'.*did you mean 'ks'"),
        ({"eval": [{"name": "procedural_zeroshot", "options": {"n_per_class": 0}}]},
         r"n_per_class must be >= 1"),
        ({"eval": [{"name": "procedural_zeroshot"}, {"name": "procedural_zeroshot"}]},
         r"distinct 'label'"),
    ],
)  # fmt: skip
def test_config_errors_come_before_any_model_is_built(tmp_path, monkeypatch, extra, message):
    built = []
    monkeypatch.setattr("clipforge.train.loop.build_model", built.append)
    with pytest.raises(ConfigError, match=message):
        train(config_from_dict(base(tmp_path, **extra)))
    assert built == [] and not tmp_path.joinpath("metrics.jsonl").exists()


def test_cli_reports_config_errors_without_building(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from clipforge.cli import app

    built = []
    monkeypatch.setattr("clipforge.train.loop.build_model", built.append)
    config = tmp_path / "train.json"
    config.write_text(json.dumps(base(tmp_path / "run")))
    result = CliRunner().invoke(app, ["train", str(config), "data.options.sizee=10"])
    assert result.exit_code == 2 and built == []
    assert "did you mean 'size'" in result.output and "Traceback" not in result.output


def test_override_errors_and_coercion(tmp_path):
    with pytest.raises(ConfigError, match=r"'data\.options\.sizee'.*did you mean 'size'"):
        config_from_dict(base(tmp_path), ["data.options.sizee=10"])
    with pytest.raises(ConfigError, match=r"unknown data\.kind 'parquet'.*'webdataset'"):
        config_from_dict(base(tmp_path), ["data.kind=parquet"])
    cfg = config_from_dict(base(tmp_path), ["data.options.size=1e3"])  # coerced to int
    assert cfg.data.options == {"size": 1000} and isinstance(cfg.data.options["size"], int)


def test_evaluate_validates_names_options_and_data(model, class_folder):
    assert {"zeroshot_classification", "zeroshot_retrieval", "procedural_zeroshot"} <= set(
        list_evaluators()
    )
    with pytest.raises(ConfigError, match=r"did you mean 'zeroshot_retrieval'"):
        evaluate("zeroshot_retreival", model)
    with pytest.raises(ConfigError, match=r"'options\.batch_sise'.*did you mean 'batch_size'"):
        evaluate("zeroshot_classification", model, {"batch_sise": 2}, {"kind": "folder"})
    with pytest.raises(ConfigError, match=r"needs 'data'"):
        evaluate("zeroshot_classification", model)
    with pytest.raises(ConfigError, match=r"takes no dataset"):
        evaluate("procedural_zeroshot", model, data={"kind": "folder", "path": str(class_folder)})


# ----------------------------------------------------------------------------- evaluators
def test_zeroshot_classification_matches_the_classifier(model, class_folder, caplog):
    (class_folder / "red" / "broken.png").write_bytes(b"not a png")
    try:
        with caplog.at_level(logging.WARNING, logger="clipforge.eval"):
            metrics = evaluate(
                "zeroshot_classification",
                model,
                {"templates": ["a photo of {c}.", "{c}"]},
                {"kind": "folder", "path": str(class_folder)},
            )
    finally:
        (class_folder / "red" / "broken.png").unlink()
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    paths = sorted(str(p) for p in class_folder.glob("*/*.png"))  # the 9 readable images
    labels = np.array([sorted(COLOURS).index(Path(p).parent.name) for p in paths])
    clf = ZeroShotClassifier(model, sorted(COLOURS), templates=["a photo of {c}.", "{c}"])
    predictions = clf.predict(paths, top_k=1, progress=False).predictions
    assert set(metrics) == {"acc1", "mean_per_class_recall"}  # 3 classes: no acc5
    assert metrics["acc1"] == pytest.approx(float((predictions == labels).mean()))
    recall = np.mean([(predictions[labels == c] == c).mean() for c in range(3)])
    assert metrics["mean_per_class_recall"] == pytest.approx(recall)


def test_zeroshot_retrieval_groups_captions_and_skips_broken(model, class_folder, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"junk")
    rows = [("red/0.png", "a red square"), ("red/0.png", "crimson"), ("blue/1.png", "blue"),
            ("green/2.png", "green"), (str(tmp_path / "broken.png"), "never read")]  # fmt: skip
    table = tmp_path / "pairs.tsv"
    table.write_text("filepath\tcaption\n" + "".join(f"{p}\t{c}\n" for p, c in rows))
    data = {"kind": "csv", "path": str(table), "options": {"root": str(class_folder)}}
    metrics = evaluate("zeroshot_retrieval", model, {"ks": [1, 3, 4]}, data)
    directions = ("image_to_text", "text_to_image")
    keys = {f"{d}_R@{k}" for d in directions for k in (1, 3, 4)}
    ranks = {f"{d}_{s}_rank" for d in directions for s in ("mean", "median")}
    assert set(metrics) == keys | ranks
    # the broken image and its caption are left out: 3 images, 4 captions
    assert metrics["text_to_image_R@3"] == 1.0 and metrics["image_to_text_R@4"] == 1.0
    paths = [str(class_folder / p) for p in ("red/0.png", "blue/1.png", "green/2.png")]
    images = clipforge.embed_images(model, paths).embeddings
    texts = clipforge.embed_texts(model, [c for _, c in rows[:4]])
    expected = retrieval_recall(images, texts, [[0, 1], [2], [3]], ks=(1, 3, 4))
    assert {k: metrics[k] for k in keys} == pytest.approx(expected)
    assert 1.0 <= metrics["text_to_image_mean_rank"] <= 3.0


def test_procedural_zeroshot_keeps_the_historical_keys(model):
    metrics = evaluate("procedural_zeroshot", model, {"image_size": 32, "n_per_class": 1})
    assert set(metrics) == {"zeroshot_test_acc", "zeroshot_val_acc"}
    assert model.training is False  # flags restored (the fixture's model is in eval mode)


def test_zeroshot_classification_on_procedural_shapes_agrees(model):
    templates = ["a {c}.", "a photo of a {c}."]
    data = {"kind": "procedural", "image_size": 32, "options": {"split": "test"}}
    metrics = evaluate("zeroshot_classification", model, {"templates": templates}, data)
    assert set(metrics) == {"acc1", "acc5", "mean_per_class_recall"}  # 35 classes
    options = {"image_size": 32, "splits": ["test"], "templates": templates}
    shapes = evaluate("procedural_zeroshot", model, options)  # same renders, same prompts
    assert metrics["acc1"] == pytest.approx(shapes["zeroshot_test_acc"])
    assert metrics["acc1"] <= metrics["acc5"]


# ----------------------------------------------------------------------------- training
def test_training_scores_a_folder_dataset_through_the_registry(tmp_path, class_folder):
    out = tmp_path / "run"
    folder = {"kind": "folder", "path": str(class_folder)}
    entry = {"name": "zeroshot_classification", "data": folder, "options": {"templates": "{c}"}}
    cfg = config_from_dict(
        base(out, data={**folder, "options": {"templates": "a photo of {c}."}}, eval=[entry],
             eval_every=1)
    )  # fmt: skip
    result = train(cfg)
    evals = [r for r in records(out) if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2]
    keys = {"zeroshot_classification/acc1", "zeroshot_classification/mean_per_class_recall"}
    assert all(set(r) == {"event", "step", *keys} for r in evals)  # no shapes scores
    # the last evaluation scored the weights of the last checkpoint
    final = evaluate("zeroshot_classification", clipforge.load(result.last_checkpoint),
                     {"templates": "{c}"}, folder)  # fmt: skip
    assert evals[-1]["zeroshot_classification/acc1"] == pytest.approx(final["acc1"])
    assert (
        result.metrics["zeroshot_classification/acc1"] == evals[-1]["zeroshot_classification/acc1"]
    )


def test_non_procedural_data_without_eval_list_is_not_scored_on_shapes(tmp_path, class_folder):
    out = tmp_path / "run"
    data = {"kind": "folder", "path": str(class_folder)}
    train(config_from_dict(base(out, data=data, eval_every=1)))
    assert [r["event"] for r in records(out)] == ["train", "train"]


@dataclass
class ScaleOptions:
    factor: float = 1.0


def test_third_party_evaluator_runs_in_eval_every(tmp_path):
    calls = []

    def logit_scale(model, data, options: ScaleOptions) -> dict[str, float]:
        calls.append((model.training, data, options))
        return {"scaled": options.factor * float(model.logit_scale.detach().exp())}

    register_evaluator("logit_scale_probe", ScaleOptions, logit_scale)
    try:
        out = tmp_path / "run"
        entry = {"name": "logit_scale_probe", "label": "probe", "options": {"factor": "2"}}
        cfg = config_from_dict(base(out, eval=[entry], eval_every=2))
        assert cfg.eval[0].options == {"factor": 2.0}  # coerced by the config engine
        result = train(cfg)
    finally:
        EVALUATORS.unregister("logit_scale_probe")
    assert calls == [(False, None, ScaleOptions(2.0))]  # run once, in eval mode
    (evals,) = [r for r in records(out) if r["event"] == "eval"]
    scale = float(clipforge.load(result.last_checkpoint).logit_scale.detach().exp())
    assert evals == {"event": "eval", "step": 2, "probe/scaled": pytest.approx(2 * scale)}


# ----------------------------------------------------------------------------- data sources
@dataclass
class ConstantOptions:
    count: int = 4
    caption: str = "a thing"


def build_constant(ctx: sources.BuildContext):
    opts = sources.source_options(ctx.cfg, "constant_test")
    image = ctx.transform(Image.new("RGB", (40, 40), (ctx.seed % 255, 0, 0)))
    return [(image, ctx.tokenize(opts.caption))] * opts.count


def test_third_party_data_source(tmp_path, model):
    sources.register_data_source("constant_test", ConstantOptions, build_constant, needs_path=False)
    try:
        assert "constant_test" in sources.list_data_sources()
        with pytest.raises(ConfigError, match=r"'data\.options\.captoin'.*did you mean 'caption'"):
            config_from_dict(
                base(tmp_path, data={"kind": "constant_test", "options": {"captoin": 1}})
            )
        cfg = config_from_dict(
            base(tmp_path, data={"kind": "constant_test", "options": {"count": "3"}})
        )
        assert cfg.data.typed_options() == ConstantOptions(count=3)
        dataset = build_dataset(cfg.data, model, seed=0)
    finally:
        sources.DATA_SOURCES.unregister("constant_test")
    assert len(dataset) == 3 and dataset[0][1].shape == (16,)


def test_folder_example_config_loads():
    example = Path(__file__).parents[2] / "examples" / "train_folder_eval.yaml"
    cfg = load_config(example, ["data.path=/data/x"])
    assert cfg.data.kind == "folder" and cfg.data.path == "/data/x"
    (entry,) = cfg.eval
    assert entry.name == "zeroshot_classification" and entry.data.kind == "folder"
    assert entry.options == {"batch_size": 64} and cfg.eval_every == 100


def test_data_config_lives_in_data():
    assert train_config.DataConfig is DataConfig
    assert DataConfig(kind="folder", path="x", options={"draft": True}).kind == "folder"
    with pytest.raises(ConfigError, match=r"did you mean 'draft'"):
        DataConfig(kind="folder", path="x", options={"drafts": True})


@pytest.mark.parametrize("package", ["data", "eval"])
def test_data_and_eval_import_nothing_from_train(package):
    import ast

    root = Path(clipforge.__file__).parent / package
    imported = set()
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                imported.add("." * node.level + (node.module or ""))
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert "..data" in imported or "..configs" in imported  # the walk saw relative imports
    assert not [m for m in imported if m.startswith(("..train", "clipforge.train"))]


def test_third_party_evaluator_is_a_cli_command_with_flags_from_its_options(tmp_path):
    from typer.testing import CliRunner

    from clipforge.cli import app

    seen = []

    def logit_scale(model, data, options: ScaleOptions) -> dict[str, float]:
        seen.append(options)
        return {"scaled": options.factor * float(model.logit_scale.detach().exp())}

    register_evaluator("scale_cli_probe", ScaleOptions, logit_scale, description="a probe")
    try:
        runner = CliRunner()
        shown = runner.invoke(app, ["eval", "scale_cli_probe", "--help"], terminal_width=200)
        assert shown.exit_code == 0 and "--factor" in shown.output, shown.output
        out = tmp_path / "r.json"
        ran = runner.invoke(app, ["eval", "scale_cli_probe", "-m", "ViT-S-32", "--factor", "3",
                                  "-o", str(out)])  # fmt: skip
        assert ran.exit_code == 0, ran.output
    finally:
        EVALUATORS.unregister("scale_cli_probe")
    assert seen == [ScaleOptions(3.0)]
    assert json.loads(out.read_text())["metrics"]["scaled"] > 0


def labelled_constant(cfg, *, limit, n_per_class=2, n_classes=None):
    """Three colours × two images: labelled images for evaluation."""
    from clipforge.data.samples import LabelledImages

    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    images = [Image.new("RGB", (40, 40), c) for c in colours for _ in range(2)]
    labels = np.repeat(np.arange(3), 2)
    return LabelledImages(images, labels, ["red", "green", "blue"], ["a {c} square"])


def test_third_party_data_source_is_used_by_train_and_eval_clis(tmp_path):
    """A source registered from outside the package: `clipforge train` trains on it and
    `clipforge eval` evaluates on it (the same registry entry)."""
    from typer.testing import CliRunner

    from clipforge.cli import app

    sources.register_data_source(
        "constant_cli", ConstantOptions, build_constant_cli, needs_path=False,
        labelled=labelled_constant,
    )  # fmt: skip
    runner = CliRunner()
    try:
        assert sources.get_data_source("constant_cli").yields == ("batches", "labelled_images")
        config = tmp_path / "train.json"
        data = {"kind": "constant_cli", "options": {"count": 6}}
        config.write_text(json.dumps(base(tmp_path / "run", data=data)))
        trained = runner.invoke(app, ["train", str(config)])
        assert trained.exit_code == 0, trained.output
        out = tmp_path / "results.json"
        evaluated = runner.invoke(app, [
            "eval", "zeroshot_classification", "-m", str(tmp_path / "run" / "latest"),
            "--data-kind", "constant_cli", "--data", "unused", "-o", str(out),
        ])  # fmt: skip
        assert evaluated.exit_code == 0, evaluated.output
        refused = runner.invoke(app, [
            "eval", "zeroshot_retrieval", "-m", TINY, "--data-kind", "constant_cli",
            "--data", "unused", "-o", str(tmp_path / "r.json"),
        ])  # fmt: skip
    finally:
        sources.DATA_SOURCES.unregister("constant_cli")
    record = json.loads(out.read_text())
    assert record["counts"]["evaluated"] == 6 and 0.0 <= record["metrics"]["acc1"] <= 1.0
    assert refused.exit_code == 2
    assert "cannot use data of kind 'constant_cli'" in refused.output


def build_constant_cli(ctx: sources.BuildContext):
    opts = sources.source_options(ctx.cfg, "constant_cli")
    image = ctx.transform(Image.new("RGB", (40, 40), (ctx.seed % 255, 0, 0)))
    return [(image, ctx.tokenize(opts.caption))] * opts.count
