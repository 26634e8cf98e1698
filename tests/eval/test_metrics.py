"""Evaluation metrics against hand-computed cases and CLIP_benchmark's own functions;
dataset readers (IDX, archives, label tables), probe splits and results files."""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.data.data_config import DataConfig
from clipforge.data.mnist import read_idx
from clipforge.eval import classification_metrics, list_evaluators, retrieval_recall
from clipforge.eval.datasets import builtin_classnames, guess_kind, load_classification
from clipforge.eval.linear_probe import _sweep, fewshot_split
from clipforge.eval.output import EvalOutput
from clipforge.eval.rank_metrics import chunked_ranks, rank_metrics
from clipforge.eval.results import make_record, merge, write_table

TINY = {
    "embed_dim": 32,
    "vision": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
               "heads": 2},
    "text": {"context_length": 16, "width": 64, "heads": 2, "layers": 2},
}  # fmt: skip


# ----------------------------------------------------------------------------- classification
def _cb_accuracy(logits: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...]) -> list:
    """CLIP_benchmark's ``accuracy`` line for line, except ``.item()`` for its
    ``float(<1-element array>)``, which numpy >= 2 rejects (so its function cannot run here)."""
    pred = logits.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0).item() / len(target) for k in topk]


def test_classification_matches_clip_benchmark_on_random_logits():
    gen = np.random.default_rng(0)
    logits = gen.normal(size=(300, 12)).astype(np.float32)
    labels = gen.integers(0, 12, size=300)
    labels[labels == 7] = 3  # class 7 has no samples
    ours = classification_metrics(logits, labels)
    acc1, acc5 = _cb_accuracy(torch.from_numpy(logits), torch.from_numpy(labels), (1, 5))
    assert ours["acc1"] == pytest.approx(acc1) and ours["acc5"] == pytest.approx(acc5)
    from sklearn.metrics import balanced_accuracy_score  # (sklearn, pandas: ~0.6 s to import)

    expected = balanced_accuracy_score(labels, logits.argmax(axis=1))  # CLIP_benchmark's call
    assert ours["mean_per_class_recall"] == pytest.approx(expected)


def test_zero_shot_logits_match_clip_benchmark_pipeline():
    """Class embeddings and logits of our evaluator == CLIP_benchmark's zero_shot_classifier +
    run_classification on the same model and images."""
    from clip_benchmark.metrics import zeroshot_classification as cb_cls

    from clipforge.eval.zeroshot_classification import Options, class_embeddings, image_logits
    from clipforge.train import ModelConfig
    from clipforge.train.loop import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture=TINY)).eval()
    classnames, templates = ["cat", "dog", "red car"], ["a photo of a {c}.", "a {c}."]
    images = [Image.new("RGB", (40, 30), (40 * i, 200 - 30 * i, 90)) for i in range(5)]
    classes = class_embeddings(model, classnames, templates)
    ours, kept, _ = image_logits(model, classes, images, Options(batch_size=2), 0, "test")
    theirs_w = cb_cls.zero_shot_classifier(
        model, model.tokenize, classnames, templates, "cpu", amp=False
    )
    batch = torch.stack([model.image_transform(i) for i in images])
    loader = [(batch[:2], torch.zeros(2)), (batch[2:], torch.zeros(3))]
    theirs, _ = cb_cls.run_classification(model, theirs_w, loader, "cpu", amp=False)
    assert kept.tolist() == list(range(5))
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)


def test_classification_fewer_than_five_classes_and_ties():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [0.0, 0.0, 3.0]])
    metrics = classification_metrics(scores, np.array([1, 1, 2]))
    # ties go to the lower class index: row 0 → 0 (miss), row 1 → 1 (hit), row 2 → 2 (hit)
    assert metrics == pytest.approx({"acc1": 2 / 3, "mean_per_class_recall": (1 / 2 + 1) / 2})


# ----------------------------------------------------------------------------- retrieval
def _hand_case():
    images = np.eye(3, dtype=np.float32)
    # captions 0, 1 → image 0; caption 2 → image 1; caption 3 → image 2
    texts = np.array([[0.1, 0.9, 0], [0.8, 0.2, 0], [0, 1, 0], [0.5, 0, 0.5]], dtype=np.float32)
    return images, texts, [0, 0, 1, 2]


@pytest.mark.parametrize("chunk", [1, 2, 100])
def test_chunked_ranks_hand_computed_multi_caption(chunk):
    images, texts, owner = _hand_case()
    ranks = chunked_ranks(images, texts, owner, k=3, chunk_size=chunk)
    # image 0 scores captions [0.1, 0.8, 0, 0.5]: best positive 0.8 ranks first
    # image 1: [0.9, 0.2, 1.0, 0]: its caption 2 is first; image 2: [0, 0, 0, 0.5]: first
    assert ranks.i2t_rank.tolist() == [0, 0, 0]
    # caption 0 ([.1,.9,0]): image 1 scores .9 > image 0's .1 → rank 1; caption 3 ([.5,0,.5])
    # ties images 0 and 2 at 0.5: a tie does not push the positive down → rank 0
    assert ranks.t2i_rank.tolist() == [1, 0, 0, 0]
    metrics = rank_metrics(ranks, ks=(1, 2))
    assert metrics["text_to_image_R@1"] == pytest.approx(3 / 4)
    assert metrics["text_to_image_R@2"] == 1.0 and metrics["image_to_text_R@1"] == 1.0
    assert metrics["text_to_image_mean_rank"] == pytest.approx(1.25)
    assert metrics["text_to_image_median_rank"] == 1.0
    assert ranks.i2t_top[1].tolist() == [2, 0, 1]


def test_chunked_ranks_match_dense_recall_and_clip_benchmark():
    from clip_benchmark.metrics import zeroshot_retrieval as cb_ret

    gen = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=-1)
    owner = torch.cat([torch.arange(40), torch.arange(40), torch.arange(20)])  # 2-3 per image
    texts = torch.nn.functional.normalize(
        images[owner] + torch.randn(100, 16, generator=gen), dim=-1
    )
    ranks = chunked_ranks(images.numpy(), texts.numpy(), owner.numpy(), k=10, chunk_size=7)
    ours = rank_metrics(ranks, ks=(1, 5, 10))
    texts_of_image = [torch.nonzero(owner == i).flatten().tolist() for i in range(40)]
    assert retrieval_recall(images.numpy(), texts.numpy(), texts_of_image) == pytest.approx(
        {k: v for k, v in ours.items() if "_R@" in k}
    )
    scores = texts @ images.T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(100), owner] = True
    for k in (1, 5, 10):
        t2i = cb_ret.batchify(cb_ret.recall_at_k, scores, positive, 16, "cpu", k=k)
        i2t = cb_ret.batchify(cb_ret.recall_at_k, scores.T, positive.T, 16, "cpu", k=k)
        assert ours[f"text_to_image_R@{k}"] == pytest.approx((t2i > 0).float().mean().item())
        assert ours[f"image_to_text_R@{k}"] == pytest.approx((i2t > 0).float().mean().item())


def test_chunked_ranks_rejects_captionless_images():
    images, texts, _ = _hand_case()
    with pytest.raises(ValueError, match="at least one caption"):
        chunked_ranks(images, texts, [0, 0, 0, 2])


# ----------------------------------------------------------------------------- linear probe
def test_fewshot_split_never_leaks_beyond_k():
    labels = np.repeat(np.arange(4), 25)
    train, val = fewshot_split(labels, k=5, val_proportion=0.2, seed=3)
    assert len(train) == 16 and len(val) == 4 and not set(train) & set(val)
    assert np.bincount(labels[np.concatenate([train, val])]).tolist() == [5, 5, 5, 5]
    assert np.bincount(labels[val]).tolist() == [1, 1, 1, 1]
    one_shot_train, one_shot_val = fewshot_split(labels, k=1, val_proportion=0.2, seed=3)
    assert len(one_shot_train) == 4 and len(one_shot_val) == 0  # no sweep with 1 per class
    with pytest.raises(ValueError, match="< k=30"):
        fewshot_split(labels, k=30, val_proportion=0.2, seed=0)


def test_sweep_finds_the_peak_coarse_to_fine():
    grid = np.logspace(-6, 2, 97).tolist()
    target = 37  # validation accuracy peaks at grid[37]

    def fit(x, y, value):
        acc = 1.0 - abs(grid.index(value) - target) / 100
        return lambda inputs: np.where(np.arange(len(inputs))[:, None] < acc * len(inputs),
                                       np.eye(2)[y], np.eye(2)[1 - y])  # fmt: skip

    x, y = np.zeros((100, 1)), np.zeros(100, dtype=np.int64)
    best, tried = _sweep(fit, grid, (x, y), (x, y))
    assert best == target and len(tried) < 20


# ----------------------------------------------------------------------------- datasets
def _write_idx(path: Path, array: np.ndarray, code: int) -> None:
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(">u1").tobytes())


def test_mnist_idx_reader_and_kind_guess(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 0x08)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 0, 7]), 0x08)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
    assert guess_kind(tmp_path) == "mnist"
    task = load_classification(DataConfig(kind="mnist", path=str(tmp_path)))
    assert task.labels.tolist() == [7, 0, 7] and task.classnames == builtin_classnames("mnist")
    assert task.images[0].mode == "RGB" and task.images[0].size == (28, 28)


def test_archive_of_folder_and_of_table(tmp_path):
    root = tmp_path / "src" / "set" / "test"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / name / "0.png")
    (tmp_path / "src" / "set" / "captions.tsv").write_text("filepath\tcaption\nx.png\thi\n")
    with tarfile.open(tmp_path / "set.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "set" / "test", arcname="set/test")
    cache = tmp_path / "cache"
    data = DataConfig(kind="archive", path=str(tmp_path / "set.tar.gz"),
                      options={"cache_dir": str(cache)})  # fmt: skip
    task = load_classification(data)
    assert task.classnames == ["cat", "dog"] and task.labels.tolist() == [0, 1]
    assert all(str(p).startswith(str(cache)) for p in task.images)
    assert guess_kind(tmp_path / "set.tar.gz") == "archive"


def test_label_tables_by_name_and_index(tmp_path):
    (tmp_path / "names.csv").write_text("filepath,label\na.png,dog\nb.png,cat\nc.png,dog\n")
    task = load_classification(DataConfig(kind="csv", path=str(tmp_path / "names.csv")))
    assert task.classnames == ["cat", "dog"] and task.labels.tolist() == [1, 0, 1]
    (tmp_path / "ids.csv").write_text("filepath,label\na.png,3\nb.png,9\n")
    task = load_classification(DataConfig(kind="csv", path=str(tmp_path / "ids.csv")), "cifar10")
    assert task.labels.tolist() == [3, 9] and task.classnames[9] == "truck"


# ----------------------------------------------------------------------------- results
def test_results_record_merge_and_tables(tmp_path):
    output = EvalOutput({"image_to_text_R@1": 0.5, "text_to_image_R@1": 0.25},
                        counts={"evaluated": 4}, details={"_images": [object()], "x": np.int64(2)})  # fmt: skip
    record = make_record(task="zeroshot_retrieval", dataset="d", model="m", pretrained=None,
                         output=output, seconds=2.0)  # fmt: skip
    assert {"dataset", "model", "pretrained", "task", "metrics", "versions"} <= set(record)
    assert record["metrics"]["text_retrieval_recall@1"] == 0.5  # CLIP_benchmark's name
    assert record["details"] == {"x": 2} and record["timing"]["images_per_second"] == 2.0
    for i in range(2):
        (tmp_path / f"r{i}.json").write_text(json.dumps({**record, "model": f"m{i}"}))
    records = merge(sorted(tmp_path.glob("r*.json")))
    csv_text = write_table(records, tmp_path / "t.csv")
    assert csv_text.splitlines()[0].startswith("model,pretrained,dataset,task,image_to_text_R@1")
    assert csv_text.splitlines()[2].startswith("m1,,d,zeroshot_retrieval,0.5")
    assert "| m0 |  | d | zeroshot_retrieval | 0.5000 |" in write_table(records, tmp_path / "t.md")
    rows = json.loads(write_table(records, tmp_path / "t.json"))
    assert [r["model"] for r in rows] == ["m0", "m1"] and rows[0]["text_to_image_R@1"] == 0.25
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a results file"):
        merge([tmp_path / "bad.json"])


def test_cli_has_a_command_per_registered_evaluator_with_flags_from_its_options():
    from typer.testing import CliRunner

    from clipforge.cli import app

    listing = CliRunner().invoke(app, ["eval", "--help"], terminal_width=200)
    assert listing.exit_code == 0, listing.output
    for name in list_evaluators():
        assert name in listing.output
    probe = CliRunner().invoke(app, ["eval", "linear_probe", "--help"], terminal_width=200)
    assert probe.exit_code == 0, probe.output
    for flag in ("--fewshot-k", "--val-proportion", "--test-data", "--epochs", "--model"):
        assert flag in probe.output, flag


def test_builtin_classnames_are_clip_benchmarks():
    reference = json.loads((Path(__file__).resolve().parents[3] / "shared" / "reference"
                            / "en_classnames.json").read_text())  # fmt: skip
    assert builtin_classnames("imagenet1k") == reference["imagenet1k"]
    assert builtin_classnames("mnist") == reference["mnist"]
    cifar100 = builtin_classnames("cifar100")
    assert len(cifar100) == 100 and cifar100 == sorted(cifar100) and "aquarium_fish" in cifar100
    assert builtin_classnames("cifar10")[:2] == ["airplane", "automobile"]
