"""Image↔text retrieval recall@K, as CLIP_benchmark defines it.

``texts_of_image[i]`` lists the indices of the captions of image ``i`` (one or more). An
image→text query succeeds at K if any of its captions ranks in the top K; a text→image
query succeeds if its image ranks in the top K. Recall is the fraction of queries that
succeed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def retrieval_recall(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    texts_of_image: Sequence[Sequence[int]] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K both ways from L2-normalised embeddings; ``None`` means caption i ↔ image i."""
    n_images, n_texts = len(image_embeddings), len(text_embeddings)
    if texts_of_image is None:
        if n_images != n_texts:
            raise ValueError("without texts_of_image, give one caption per image")
        texts_of_image = [[i] for i in range(n_images)]
    positive = np.zeros((n_images, n_texts), dtype=bool)
    for image, texts in enumerate(texts_of_image):
        positive[image, list(texts)] = True
    if not positive.any(axis=0).all():
        raise ValueError("every caption must belong to an image")
    scores = np.asarray(image_embeddings) @ np.asarray(text_embeddings).T
    # rank of the best positive: how many candidates score strictly higher
    i2t_best = np.where(positive, scores, -np.inf).max(axis=1)
    i2t_rank = (scores > i2t_best[:, None]).sum(axis=1)
    t2i_best = np.where(positive, scores, -np.inf).max(axis=0)
    t2i_rank = (scores > t2i_best[None, :]).sum(axis=0)
    metrics = {}
    for k in ks:
        metrics[f"image_to_text_R@{k}"] = float((i2t_rank < k).mean())
        metrics[f"text_to_image_R@{k}"] = float((t2i_rank < k).mean())
    return metrics
