"""Classification metrics as CLIP_benchmark computes them (``zeroshot_classification.py``).

``acc1``/``acc5``: the fraction of samples whose label is among the top-1/top-5 logits
(acc5 only with at least 5 classes). ``mean_per_class_recall``: recall averaged over the
classes that have samples (``sklearn.metrics.balanced_accuracy_score``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["classification_metrics"]


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``acc1``, ``acc5`` (>= 5 classes) and ``mean_per_class_recall`` from ``(N, C)`` scores."""
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need (N, C) scores for N >= 1 labels, got {scores.shape} and {len(labels)}"
        )
    n_classes = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")  # ties: the lower class index first
    metrics = {"acc1": float((order[:, 0] == labels).mean())}
    if n_classes >= 5:
        metrics["acc5"] = float((order[:, :5] == labels[:, None]).any(axis=1).mean())
    predictions = order[:, 0]
    recalls = [
        float((predictions[labels == c] == c).mean())
        for c in range(n_classes)
        if (labels == c).any()
    ]
    metrics["mean_per_class_recall"] = float(np.mean(recalls))
    return metrics
