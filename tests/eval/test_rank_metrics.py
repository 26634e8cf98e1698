import numpy as np
import pytest

from clipforge.eval import retrieval_recall


def _direct(scores, positive, k):
    """Brute-force definition: sort each row, look for a positive in the top k."""
    i2t = np.mean([positive[i, np.argsort(-scores[i])[:k]].any() for i in range(len(scores))])
    t2i = np.mean(
        [positive[np.argsort(-scores[:, j])[:k], j].any() for j in range(scores.shape[1])]
    )
    return i2t, t2i


def test_recall_matches_brute_force_with_several_captions_per_image():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(20, 8))
    texts = rng.normal(size=(60, 8))
    texts_of_image = [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(20)]
    positive = np.zeros((20, 60), dtype=bool)
    for i, t in enumerate(texts_of_image):
        positive[i, t] = True
    metrics = retrieval_recall(images, texts, texts_of_image, ks=(1, 5))
    for k in (1, 5):
        i2t, t2i = _direct(images @ texts.T, positive, k)
        assert metrics[f"image_to_text_R@{k}"] == pytest.approx(i2t)
        assert metrics[f"text_to_image_R@{k}"] == pytest.approx(t2i)


def test_perfect_and_reversed_embeddings():
    eye = np.eye(10)
    assert retrieval_recall(eye, eye, ks=(1,))["image_to_text_R@1"] == 1.0
    shifted = np.roll(eye, 1, axis=0)
    assert retrieval_recall(eye, shifted, ks=(1,))["text_to_image_R@1"] == 0.0


def test_errors():
    with pytest.raises(ValueError, match="one caption per image"):
        retrieval_recall(np.eye(3), np.eye(4))
