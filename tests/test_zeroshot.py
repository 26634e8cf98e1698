"""Zero-shot classification: template-ensemble maths, scales, templates, failures, real images."""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.zeroshot import TEMPLATE_SETS, ZeroShotClassifier, ZeroShotResult, get_templates

from .conftest import tiny_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CIFAR_TEST = SHARED / "data" / "cifar10-test.tar.gz"
TEMPLATES_REF = SHARED / "reference" / "en_zeroshot_classification_templates.json"
CLASSES = ["cat", "dog", "car", "airplane"]
ATOL = 1e-5


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"required test data is missing: {path} (expected ../shared beside the repo)")
    return path


@pytest.fixture(scope="module")
def model() -> clipforge.CLIP:
    return tiny_model()


def random_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)) for i in range(n)
    ]


def image_embeddings(model: clipforge.CLIP, images: list) -> torch.Tensor:
    pixels = torch.stack([model.preprocess(im) for im in images])
    with torch.inference_mode():
        return model.encode_image(pixels, normalize=True)


def check_result(result: ZeroShotResult, n: int, n_classes: int, k: int) -> None:
    assert result.probs.shape == (n, n_classes) and result.probs.dtype == np.float32
    assert np.isfinite(result.probs).all() and (result.probs >= 0).all()
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)
    assert result.top_k_indices.shape == (n, k) == result.top_k_scores.shape
    order = np.argsort(-result.probs, axis=1, kind="stable")[:, :k]
    np.testing.assert_allclose(
        np.take_along_axis(result.probs, order, axis=1), result.top_k_scores, atol=1e-7
    )
    np.testing.assert_array_equal(
        np.take_along_axis(result.probs, result.top_k_indices, axis=1), result.top_k_scores
    )
    assert (np.diff(result.top_k_scores, axis=1) <= 0).all()
    labels = [[result.classnames[j] for j in row] for row in result.top_k_indices]
    assert result.top_k_labels == labels
    assert result.labels == [row[0] for row in labels]
    np.testing.assert_array_equal(result.predictions, result.top_k_indices[:, 0])


def test_template_sets_are_the_reference_ones() -> None:
    reference = json.loads(require(TEMPLATES_REF).read_text())
    assert set(TEMPLATE_SETS) == {"openai_imagenet", "simple", "cifar10", "cifar100", "mnist"}
    assert list(TEMPLATE_SETS["openai_imagenet"]) == reference["imagenet1k"]
    assert len(TEMPLATE_SETS["openai_imagenet"]) == 80
    assert list(TEMPLATE_SETS["cifar10"]) == reference["cifar10"]
    assert list(TEMPLATE_SETS["cifar100"]) == reference["cifar100"]
    assert list(TEMPLATE_SETS["mnist"]) == reference["mnist"]
    assert get_templates("simple") == ["a photo of a {c}."]


def test_class_embeddings_are_normalised_mean_of_normalised_prompts(model) -> None:
    templates = ["a photo of a {c}.", "a sketch of the {c}", "{c}!"]
    clf = ZeroShotClassifier(model, CLASSES, templates=templates, batch_size=5)
    expected = []
    with torch.inference_mode():
        for name in CLASSES:
            tokens = model.tokenize([t.replace("{c}", name) for t in templates])
            per_prompt = model.encode_text(tokens)
            per_prompt = per_prompt / per_prompt.norm(dim=-1, keepdim=True)
            mean = per_prompt.mean(dim=0)
            expected.append(mean / mean.norm())
    emb = clf.class_embeddings
    assert emb.shape == (len(CLASSES), model.config.embed_dim)
    torch.testing.assert_close(emb, torch.stack(expected), atol=ATOL, rtol=0)
    assert clf.class_embeddings is emb  # cached
    assert clf.prompts("cat")[0] == "a photo of a cat."
    clf.reset()
    torch.testing.assert_close(clf.class_embeddings, emb, atol=0, rtol=0)


def test_logits_are_100_times_cosine_and_probs_consistent(model) -> None:
    images = random_images(5)
    clf = ZeroShotClassifier(model, CLASSES, templates="simple")
    result = clf.predict(images, top_k=3, batch_size=2)
    check_result(result, n=5, n_classes=len(CLASSES), k=3)
    cos = image_embeddings(model, images) @ clf.class_embeddings.T
    np.testing.assert_allclose(result.probs, (100 * cos).softmax(-1).numpy(), atol=1e-5)
    assert result.indices.tolist() == list(range(5)) and result.failures == []
    # top_k larger than the number of classes is clipped
    assert clf.predict(images[:2], top_k=10).top_k_indices.shape == (2, len(CLASSES))
    with pytest.raises(ValueError, match="top_k"):
        clf.predict(images, top_k=0)


def test_model_scale_option(model) -> None:
    images = random_images(3, seed=1)
    saved = model.logit_scale.detach().clone()
    try:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(10.0))
        by_flag = ZeroShotClassifier(model, CLASSES, templates="simple", use_model_scale=True)
        by_none = ZeroShotClassifier(model, CLASSES, templates="simple", logit_scale=None)
        fixed = ZeroShotClassifier(model, CLASSES, templates="simple", logit_scale=10.0)
        assert by_flag.scale == pytest.approx(10.0) and by_none.scale == pytest.approx(10.0)
        cos = image_embeddings(model, images) @ by_flag.class_embeddings.T
        expected = (10 * cos).softmax(-1).numpy()
        for clf in (by_flag, by_none, fixed):
            np.testing.assert_allclose(clf.predict(images).probs, expected, atol=1e-5)
        default = ZeroShotClassifier(model, CLASSES, templates="simple").predict(images)
        assert not np.allclose(default.probs, expected, atol=1e-3)
    finally:
        with torch.no_grad():
            model.logit_scale.copy_(saved)


def test_user_templates_list_and_files(model, tmp_path) -> None:
    templates = ["a photo of a {c}.", "art of the {c}."]
    txt = tmp_path / "templates.txt"
    txt.write_text("# my prompts\na photo of a {c}.\n\n  art of the {c}.  \n")
    js = tmp_path / "templates.json"
    js.write_text(json.dumps(templates))
    assert get_templates(templates) == templates
    assert get_templates(txt) == templates == get_templates(str(txt))
    assert get_templates(js) == templates
    assert get_templates("itap of a {c}.") == ["itap of a {c}."]
    assert len(get_templates("openai_imagenet")) == 80
    from_list = ZeroShotClassifier(model, CLASSES, templates=templates).class_embeddings
    from_file = ZeroShotClassifier(model, CLASSES, templates=txt).class_embeddings
    torch.testing.assert_close(from_file, from_list, atol=0, rtol=0)
    with pytest.raises(ValueError, match="unknown template set"):
        get_templates("no_such_set")
    with pytest.raises(ValueError, match="placeholder"):
        get_templates(["a photo of a thing"])
    with pytest.raises(ValueError, match="no templates"):
        get_templates([])
    with pytest.raises(ValueError, match="non-empty"):
        ZeroShotClassifier(model, [])


def test_bad_paths_reported_good_ones_classified(model, tmp_path) -> None:
    good = []
    for i, image in enumerate(random_images(3, seed=2)):
        good.append(tmp_path / f"img{i}.png")
        image.save(good[-1])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    missing = tmp_path / "missing.png"
    inputs = [good[0], missing, good[1], corrupt, good[2]]
    clf = ZeroShotClassifier(model, CLASSES, templates="simple")
    result = clf.predict(inputs, top_k=2, batch_size=2)
    check_result(result, n=3, n_classes=len(CLASSES), k=2)
    assert result.indices.tolist() == [0, 2, 4]
    assert result.paths == [str(p) for p in good]
    assert [p for p, _ in result.failures] == [str(missing), str(corrupt)]
    assert all(reason for _, reason in result.failures)
    alone = clf.predict(good)
    np.testing.assert_allclose(result.probs, alone.probs, atol=1e-6)
    # tensors (a batch or a list) give the same as the files
    pixels = torch.stack([model.preprocess(p) for p in good])
    np.testing.assert_allclose(clf.predict(pixels).probs, alone.probs, atol=1e-5)
    np.testing.assert_allclose(clf.predict(list(pixels)).probs, alone.probs, atol=1e-5)


def extract_one_per_class(archive: Path, dest: Path) -> list[Path]:
    """The first JPEG of each CIFAR-10 class in the tarball, written under ``dest``."""
    found: dict[str, Path] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 4 or parts[-1][-4:] != ".jpg":
                continue
            label = parts[2]
            if label in found:
                continue
            out = dest / label / parts[3]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(member).read())
            found[label] = out
            if len(found) == 10:
                break
    return [found[label] for label in sorted(found)]


def test_cifar10_images_end_to_end(model, tmp_path) -> None:
    paths = extract_one_per_class(require(CIFAR_TEST), tmp_path)
    assert len(paths) == 10
    classnames = [p.parent.name for p in paths]
    clf = ZeroShotClassifier(model, classnames, templates="cifar10")
    result = clf.predict(paths, top_k=5, batch_size=4)
    assert result.failures == []
    assert result.paths == [str(p) for p in paths]
    check_result(result, n=10, n_classes=10, k=5)
    assert set(result.labels) <= set(classnames)
