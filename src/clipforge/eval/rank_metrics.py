"""Image↔text retrieval recall@K, as CLIP_benchmark defines it.

``texts_of_image[i]`` lists the indices of the captions of image ``i`` (one or more). An
image→text query succeeds at K if any of its captions ranks in the top K; a text→image
query succeeds if its image ranks in the top K. Recall is the fraction of queries that
succeed. :func:`chunked_ranks` computes the same in blocks (never the whole score matrix),
with mean and median ranks (:func:`rank_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["RetrievalRanks", "chunked_ranks", "rank_metrics", "retrieval_recall"]


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


@dataclass
class RetrievalRanks:
    """Per-query ranks (0 = first) and top-k lists of a chunked retrieval.

    ``i2t_rank[i]``: rank of image ``i``'s best-ranked caption among all captions;
    ``t2i_rank[t]``: rank of caption ``t``'s image among all images. A candidate tied with the
    positive does not push it down (rank = number of strictly higher scores).
    """

    i2t_rank: np.ndarray
    t2i_rank: np.ndarray
    i2t_top: np.ndarray  # (N_images, k) caption indices, best first
    t2i_top: np.ndarray  # (N_texts, k) image indices, best first


def chunked_ranks(
    image_embeddings: np.ndarray | torch.Tensor,
    text_embeddings: np.ndarray | torch.Tensor,
    text_image_index: Sequence[int] | np.ndarray,
    k: int = 10,
    chunk_size: int = 1024,
    device: str | torch.device | None = None,
) -> RetrievalRanks:
    """Ranks and top-``k`` both ways, one ``chunk_size × N`` score block at a time.

    Memory beyond the embeddings is O(chunk_size · N + (N_images + N_texts) · k): the full
    score matrix is never held. ``text_image_index[t]`` is the image of caption ``t``.
    """
    images = torch.as_tensor(np.asarray(image_embeddings), dtype=torch.float32, device=device)
    texts = torch.as_tensor(np.asarray(text_embeddings), dtype=torch.float32, device=device)
    owner = torch.as_tensor(np.asarray(text_image_index), dtype=torch.long, device=images.device)
    n_images, n_texts = len(images), len(texts)
    if len(owner) != n_texts or n_texts == 0 or n_images == 0:
        raise ValueError("need images, captions and one image index per caption")
    if owner.min() < 0 or owner.max() >= n_images:
        raise ValueError("text_image_index out of range")
    if torch.bincount(owner, minlength=n_images).min() == 0:
        raise ValueError("every image needs at least one caption")
    ki, kt = min(k, n_texts), min(k, n_images)
    i2t_rank, i2t_top, t2i_rank, t2i_top = [], [], [], []
    for start in range(0, n_images, chunk_size):
        scores = images[start : start + chunk_size] @ texts.T  # (c, N_texts)
        local = owner - start
        mine = (local >= 0) & (local < len(scores))
        best = torch.full((len(scores),), -torch.inf, device=scores.device)
        cols = torch.nonzero(mine).flatten()
        best.scatter_reduce_(0, local[cols], scores[local[cols], cols], "amax")
        i2t_rank.append((scores > best[:, None]).sum(dim=1).cpu())
        i2t_top.append(scores.topk(ki, dim=1).indices.cpu())
    for start in range(0, n_texts, chunk_size):
        scores = texts[start : start + chunk_size] @ images.T  # (c, N_images)
        positive = scores.gather(1, owner[start : start + chunk_size, None])
        t2i_rank.append((scores > positive).sum(dim=1).cpu())
        t2i_top.append(scores.topk(kt, dim=1).indices.cpu())
    return RetrievalRanks(
        torch.cat(i2t_rank).numpy(),
        torch.cat(t2i_rank).numpy(),
        torch.cat(i2t_top).numpy(),
        torch.cat(t2i_top).numpy(),
    )


def rank_metrics(ranks: RetrievalRanks, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K both ways (CLIP_benchmark's definition) and mean/median rank (1 = first)."""
    metrics = {}
    for k in ks:
        metrics[f"image_to_text_R@{k}"] = float((ranks.i2t_rank < k).mean())
        metrics[f"text_to_image_R@{k}"] = float((ranks.t2i_rank < k).mean())
    for name, rank in (("image_to_text", ranks.i2t_rank), ("text_to_image", ranks.t2i_rank)):
        metrics[f"{name}_mean_rank"] = float(rank.mean() + 1)
        metrics[f"{name}_median_rank"] = float(np.median(rank) + 1)
    return metrics
