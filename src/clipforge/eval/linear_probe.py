"""``linear_probe``: a classifier on frozen, L2-normalised image features.

CLIP_benchmark's protocol (``metrics/linear_probe.py``): a linear layer trained with AdamW
and a cosine learning-rate schedule; the weight decay is chosen on a validation split carved
out of the training data (a coarse-to-fine search over ``logspace(-6, 2, 97)``: 7 points,
then ±8, ±4, ±2, ±1 grid steps around the best), then the layer is retrained on train+val and
scored on the test set. ``probe: logreg`` runs the CLIP paper's protocol instead:
scikit-learn's L-BFGS logistic regression, its inverse regularisation ``C`` searched the
same way over ``logspace(-6, 6, 97)``.

``fewshot_k``: ``k`` training images per class (seeded); the validation split is taken
*from those k* (stratified), so no image beyond the ``k`` per class is ever seen — unlike
CLIP_benchmark, whose validation set is drawn from the full training data (its issue #125).
With fewer than 2 images per class there is no validation split: no sweep, weight decay 0.

Data: the training set is ``data``; the test set is ``options.test_data`` (a data config
dict). Features are computed once per split (and stored in ``cache_dir`` if given).
Metrics: ``acc1``, ``acc5`` (>= 5 classes), ``mean_per_class_recall`` on the test set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..configs import ConfigError
from ..data.data_config import DataConfig
from ..embedding import embed_images
from ..runtime import Precision
from .datasets import load_classification
from .metrics import classification_metrics
from .output import EvalOutput
from .registry import as_data_config

__all__ = ["Options", "details", "fewshot_split", "run", "search_grid", "train_linear"]

logger = logging.getLogger("clipforge.eval")


@dataclass
class Options:
    """Options of ``linear_probe`` (see the module docstring)."""

    test_data: dict[str, Any] = field(default_factory=dict)  # {kind, path, options}
    probe: str = "linear"  # linear | logreg
    fewshot_k: int | None = None
    epochs: int = 10
    lr: float = 0.1
    probe_batch_size: int = 256
    val_proportion: float = 0.2
    seed: int = 0
    batch_size: int = 64  # images per feature-extraction batch
    limit: int | None = None  # training images (evenly spaced subset)
    test_limit: int | None = None
    cache_dir: str | None = None  # feature cache (None: in memory only)
    precision: Precision = "fp32"  # autocast

    def __post_init__(self) -> None:
        if self.probe not in ("linear", "logreg"):
            raise ConfigError(f"linear_probe: probe must be linear or logreg, got {self.probe!r}")
        if self.fewshot_k is not None and self.fewshot_k < 1:
            raise ConfigError("linear_probe: fewshot_k must be >= 1")
        if self.epochs < 1 or self.probe_batch_size < 1 or not 0 < self.val_proportion < 1:
            raise ConfigError("linear_probe: epochs, probe_batch_size >= 1; 0 < val_proportion < 1")


def _fingerprint(model: Any) -> str:
    digest = hashlib.sha1()
    for name, param in model.state_dict().items():
        digest.update(f"{name}{tuple(param.shape)}{float(param.double().sum()):.8e}".encode())
    return digest.hexdigest()


def features(
    model: Any, data: DataConfig, options: Options, limit: int | None
) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, str]]]:
    """``(L2-normalised features, labels, class names, failures)`` of ``data`` (cached)."""

    cache = None
    if options.cache_dir:
        spec = json.dumps([asdict(data), limit, options.precision], sort_keys=True, default=str)
        key = hashlib.sha1((_fingerprint(model) + spec).encode()).hexdigest()[:20]
        cache = Path(options.cache_dir) / f"features-{key}.npz"
        if cache.exists():
            stored = np.load(cache, allow_pickle=False)
            failures = [tuple(f) for f in json.loads(str(stored["failures"]))]
            return stored["x"], stored["y"], list(stored["classnames"]), failures
    task = load_classification(data, None, limit)
    result = embed_images(
        model,
        task.images,
        batch_size=options.batch_size,
        num_workers=data.num_workers,
        precision=options.precision,
    )
    x, y = result.embeddings.astype(np.float32), task.labels[result.indices]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x, y=y, classnames=np.asarray(task.classnames),
                 failures=json.dumps(result.failures))  # fmt: skip
    return x, y, task.classnames, list(result.failures)


def fewshot_split(
    labels: np.ndarray, k: int | None, val_proportion: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train indices, validation indices)``: per class, ``k`` images (all if None), of
    which a ``val_proportion`` share (rounded, at least 1 if the class has 2+) validates."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if k is not None:
            if len(members) < k:
                raise ConfigError(f"linear_probe: class {int(c)} has {len(members)} < k={k} images")
            members = members[:k]
        n_val = max(1, round(len(members) * val_proportion)) if len(members) >= 2 else 0
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def train_linear(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, options: Options
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A linear layer trained with AdamW + cosine schedule; returns ``logits(x)``."""
    gen = torch.Generator().manual_seed(options.seed)
    layer = torch.nn.Linear(x.shape[1], n_classes).to(x.device)
    with torch.no_grad():  # seeded init, independent of the global RNG
        bound = 1 / math.sqrt(x.shape[1])
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=gen) * 2 * bound - bound)
        layer.bias.copy_(torch.rand(layer.bias.shape, generator=gen) * 2 * bound - bound)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=options.lr, weight_decay=weight_decay)
    per_epoch = math.ceil(len(x) / options.probe_batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / (options.epochs * per_epoch)))
    )
    for _ in range(options.epochs):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for start in range(0, len(x), options.probe_batch_size):
            batch = order[start : start + options.probe_batch_size]
            loss = F.cross_entropy(layer(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    layer.eval()
    return lambda inputs: layer(inputs).detach()


def _fit(options: Options, n_classes: int) -> Callable[..., Callable[[Any], np.ndarray]]:
    """``fit(x, y, regulariser) -> predict_scores(x)`` for ``options.probe``."""
    if options.probe == "logreg":
        from sklearn.linear_model import LogisticRegression

        def fit_logreg(x: np.ndarray, y: np.ndarray, c: float) -> Callable[[Any], np.ndarray]:
            model = LogisticRegression(C=c, max_iter=1000, random_state=options.seed)
            model.fit(x, y)
            scores = np.full((1, n_classes), -np.inf)

            def predict(inputs: np.ndarray) -> np.ndarray:
                out = np.repeat(scores, len(inputs), axis=0)
                out[:, model.classes_] = model.decision_function(inputs).reshape(len(inputs), -1)
                return out

            return predict

        return fit_logreg

    def fit_linear(x: np.ndarray, y: np.ndarray, wd: float) -> Callable[[Any], np.ndarray]:
        logits = train_linear(torch.from_numpy(x), torch.from_numpy(y), n_classes, wd, options)
        return lambda inputs: logits(torch.from_numpy(inputs)).numpy()

    return fit_linear


def search_grid(probe: str) -> list[float]:
    """The regularisation grid: weight decay (linear) or ``C`` (logreg)."""
    high = 2 if probe == "linear" else 6
    return np.logspace(-6, high, num=97).tolist()


def _sweep(fit: Callable, grid: list[float], train: tuple, val: tuple) -> tuple[int, list]:
    """CLIP_benchmark's coarse-to-fine search; ``(best grid index, [(value, val acc1)])``."""
    tried: dict[int, float] = {}

    def peak(indices: list[int]) -> int:
        for i in indices:
            if i not in tried:
                predict = fit(*train, grid[i])
                tried[i] = float((predict(val[0]).argmax(axis=1) == val[1]).mean())
        return max(indices, key=lambda i: (tried[i], -i))

    best = peak([round(i * 16) for i in range(7)])  # logspace points 10^-6, ..., grid end
    span = 8
    while span > 0:
        best = peak([max(best - span, 0), best, min(best + span, len(grid) - 1)])
        span //= 2
    return best, [(grid[i], tried[i]) for i in sorted(tried)]


def details(model: Any, data: DataConfig | None, options: Options) -> EvalOutput:
    """Train the probe on ``data`` and score it on ``options.test_data``."""

    if data is None or not options.test_data:
        raise ConfigError("linear_probe needs a training dataset and options.test_data")
    test_data = as_data_config(options.test_data)
    if test_data is None:
        raise ConfigError("linear_probe needs options.test_data")
    start = time.perf_counter()
    x, y, classnames, failures = features(model, data, options, options.limit)
    x_test, y_test, _, test_failures = features(model, test_data, options, options.test_limit)
    x, x_test = (
        (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32),
        (x_test / np.linalg.norm(x_test, axis=1, keepdims=True)).astype(np.float32),
    )
    feature_s = time.perf_counter() - start
    n_classes = max(len(classnames), int(max(y.max(), y_test.max())) + 1)
    fit = _fit(options, n_classes)
    train_idx, val_idx = fewshot_split(y, options.fewshot_k, options.val_proportion, options.seed)
    grid, sweep = search_grid(options.probe), []
    if len(val_idx):
        best, sweep = _sweep(fit, grid, (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]))
        regulariser = grid[best]
    else:
        regulariser = 0.0 if options.probe == "linear" else 1.0
    pool = np.concatenate([train_idx, val_idx])  # train + val (few-shot: still the k per class)
    scores = fit(x[pool], y[pool], regulariser)(x_test)
    metrics = classification_metrics(scores, y_test)
    return EvalOutput(
        metrics=metrics,
        counts={
            "images": len(y) + len(failures),
            "train": len(train_idx),
            "val": len(val_idx),
            "test": len(y_test),
            "failed": len(failures) + len(test_failures),
            "classes": n_classes,
        },
        failures=failures + test_failures,
        details={
            "probe": options.probe,
            "regulariser": "C" if options.probe == "logreg" else "weight_decay",
            "best": regulariser,
            "sweep": sweep,
            "feature_seconds": feature_s,
            "probe_seconds": time.perf_counter() - start - feature_s,
            "classnames": classnames,
        },
    )


def run(model: Any, data: DataConfig | None, options: Options) -> dict[str, float]:
    """Linear-probe test metrics of ``model`` trained on ``data``."""
    return details(model, data, options).metrics
