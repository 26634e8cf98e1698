"""Zero-shot image classification with prompt-template ensembles (Radford et al., 2021).

Each class is embedded as the mean of its L2-normalised prompt embeddings (one prompt per
template), normalised again; an image's logits are ``scale * cos(image, class)``, and its
class probabilities their softmax — or, for a SigLIP model (one with a ``logit_bias``), the
per-class sigmoids of ``exp(logit_scale) * cos + logit_bias``, as the SigLIP paper and
transformers' zero-shot pipeline define them.

Prompt templates (named sets, files, lists) live in :mod:`clipforge.templates`; their names
are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .embedding import (
    Images,
    check_images,
    describe_input,
    encode_texts,
    stream_image_embeddings,
)
from .errors import UsageError
from .models.protocols import ClipModel
from .runtime import Precision, check_precision
from .templates import PLACEHOLDER, TEMPLATE_SETS, get_templates

__all__ = [
    "PLACEHOLDER",
    "TEMPLATE_SETS",
    "ZeroShotClassifier",
    "ZeroShotResult",
    "get_templates",
]


@dataclass
class ZeroShotResult:
    """Zero-shot predictions for the inputs that could be read.

    Attributes:
        probs: float32 ``(N_ok, C)`` probabilities, one row per readable input (softmax rows;
            per-class sigmoids for SigLIP models, see :class:`ZeroShotClassifier`).
        top_k_indices: int64 ``(N_ok, k)`` class indices, most probable first.
        top_k_scores: float32 ``(N_ok, k)`` their probabilities.
        top_k_labels: the class names of ``top_k_indices``.
        classnames: the ``C`` class names.
        indices: int64 ``(N_ok,)`` positions of the rows' inputs in the input sequence.
        paths: each row's input path (``None`` for PIL images / tensors).
        failures: ``(path, reason)`` for every input that could not be read.
    """

    probs: np.ndarray
    top_k_indices: np.ndarray
    top_k_scores: np.ndarray
    top_k_labels: list[list[str]]
    classnames: list[str]
    indices: np.ndarray
    paths: list[str | None]
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def predictions(self) -> np.ndarray:
        """int64 ``(N_ok,)`` top-1 class index per row."""
        return self.probs.argmax(axis=1) if len(self.probs) else np.zeros(0, dtype=np.int64)

    @property
    def labels(self) -> list[str]:
        """Top-1 class name per row."""
        return [self.classnames[i] for i in self.predictions]


def class_embeddings(
    model: ClipModel,
    classnames: Sequence[str],
    prompts: Sequence[str] | Mapping[str, Sequence[str]],
    batch_size: int = 256,
    precision: Precision | str | None = None,
) -> torch.Tensor:
    """float32 ``(C, D)`` unit-norm class embeddings: per class, the L2-normalised mean of
    its L2-normalised prompt embeddings (CLIP's zero-shot classifier).

    ``prompts`` are templates with ``{c}`` (the same for every class) or a mapping of class
    name to its own prompts (CuPL-style). The result is a normal (not inference-mode) tensor.
    """
    if isinstance(prompts, Mapping):
        per_class = [list(prompts[c]) for c in classnames]
    else:
        per_class = [[t.replace(PLACEHOLDER, c) for t in prompts] for c in classnames]
    flat = [p for group in per_class for p in group]
    with torch.inference_mode():
        emb = encode_texts(
            model, flat, batch_size, normalize=True, precision=check_precision(precision)
        )
        chunks = torch.split(emb, [len(group) for group in per_class])
        classes = F.normalize(torch.stack([c.mean(dim=0) for c in chunks]), dim=-1)
    return classes.clone()


class ZeroShotClassifier:
    """Classify images into ``classnames`` with a CLIP model and a prompt-template ensemble.

    Args:
        model: a :class:`clipforge.CLIP` (both towers).
        classnames: the class names, substituted for ``{c}`` in every template.
        templates: anything :func:`get_templates` accepts (default: OpenAI's 80 prompts).
        batch_size: prompts per text-encoder batch when building the class embeddings.
        logit_scale: multiplier of the cosine similarities (100, as in CLIP's evaluation).
            ``None`` means the model's own ``exp(logit_scale)``.
        use_model_scale: use the model's ``exp(logit_scale)`` instead of ``logit_scale``.
        precision: "fp32", "bf16" or "fp16": run the model under autocast (the model runs
            where its weights are; move it with ``model.to(device)``).
        probabilities: ``"softmax"`` over the classes, ``"sigmoid"`` per class (SigLIP: the
            model's own scale and bias, ``logit_scale`` is then not used), or ``"auto"``:
            sigmoid for models with a ``logit_bias``, softmax for the others.
    """

    def __init__(
        self,
        model: ClipModel,
        classnames: Sequence[str],
        templates: str | os.PathLike | Sequence[str] = "openai_imagenet",
        batch_size: int = 256,
        logit_scale: float | None = 100.0,
        use_model_scale: bool = False,
        precision: Precision | None = None,
        probabilities: Literal["auto", "softmax", "sigmoid"] = "auto",
    ) -> None:
        if isinstance(classnames, str):
            raise TypeError("classnames must be a sequence of strings, not one string")
        self.classnames = list(classnames)
        if not self.classnames or not all(isinstance(c, str) for c in self.classnames):
            raise UsageError("classnames must be a non-empty sequence of strings")
        if probabilities not in ("auto", "softmax", "sigmoid"):
            raise UsageError(
                f"probabilities must be auto, softmax or sigmoid, got {probabilities!r}"
            )
        bias = model.logit_bias
        if probabilities == "sigmoid" and bias is None:
            raise UsageError("sigmoid probabilities need a model with a logit_bias (SigLIP)")
        self.sigmoid = bias is not None and probabilities != "softmax"
        self.model = model
        self.templates = get_templates(templates)
        self.batch_size = batch_size
        self.precision: Precision = check_precision(precision)
        self.use_model_scale = use_model_scale or logit_scale is None
        self._fixed_scale = None if logit_scale is None else float(logit_scale)
        self._class_embeddings: torch.Tensor | None = None

    @property
    def scale(self) -> float:
        """The multiplier applied to cosine similarities to get logits."""
        if self.use_model_scale or self.sigmoid:
            return float(self.model.logit_scale.detach().float().exp())
        return self._fixed_scale  # type: ignore[return-value]

    def prompts(self, classname: str) -> list[str]:
        """The prompts for one class (each template with ``{c}`` replaced)."""
        return [t.replace(PLACEHOLDER, classname) for t in self.templates]

    @property
    def class_embeddings(self) -> torch.Tensor:
        """float32 ``(C, D)`` unit-norm class embeddings on the model's device (cached).

        Per class: mean of the L2-normalised prompt embeddings, L2-normalised again. Built
        once, in batches of ``batch_size`` prompts; call :meth:`reset` after changing the
        model's weights.
        """
        if self._class_embeddings is None:
            self._class_embeddings = class_embeddings(
                self.model, self.classnames, self.templates, self.batch_size, self.precision
            )
        return self._class_embeddings

    def reset(self) -> None:
        """Forget the cached class embeddings (they are rebuilt on next use)."""
        self._class_embeddings = None

    def logits(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` image embeddings (normalised here) → ``(N, C)`` logits (plus the
        model's ``logit_bias`` in sigmoid mode)."""
        classes = self.class_embeddings
        image = F.normalize(image_embeddings.to(classes.device, torch.float32), dim=-1)
        logits = self.scale * image @ classes.T
        bias = self.model.logit_bias
        if self.sigmoid and bias is not None:  # sigmoid mode is only chosen with a bias
            logits = logits + float(bias.detach().float())
        return logits

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities from :meth:`logits`: per-class sigmoids or a softmax."""
        return logits.sigmoid() if self.sigmoid else logits.softmax(dim=-1)

    def predict(
        self,
        images: Images,
        top_k: int = 5,
        batch_size: int = 32,
        num_workers: int = 0,
        progress: bool | None = None,
    ) -> ZeroShotResult:
        """Classify images: paths, PIL images, ``(3, H, W)`` tensors or an ``(N, 3, H, W)`` batch.

        Unreadable paths are reported in ``result.failures`` and the others still
        classified; ``result.indices`` / ``result.paths`` map rows back to inputs.
        ``progress``: tqdm bar (``None``: only on a terminal and with more than one batch).
        """
        if top_k < 1:
            raise UsageError(f"top_k must be >= 1, got {top_k}")
        k = min(top_k, len(self.classnames))
        items = check_images(images)
        _ = self.class_embeddings  # build before the image loop
        probs: list[torch.Tensor] = []
        kept: list[int] = []

        def classify(indices: list[int], features: torch.Tensor) -> None:
            kept.extend(indices)
            probs.append(self.probabilities(self.logits(features)).cpu())

        failed = stream_image_embeddings(
            self.model,
            items,
            classify,
            batch_size=batch_size,
            num_workers=num_workers,
            normalize=True,
            progress=progress,
            precision=self.precision,
        )
        all_probs = torch.cat(probs) if probs else torch.zeros((0, len(self.classnames)))
        scores, top = all_probs.topk(k, dim=-1)
        return ZeroShotResult(
            probs=all_probs.numpy(),
            top_k_indices=top.numpy().astype(np.int64),
            top_k_scores=scores.numpy(),
            top_k_labels=[[self.classnames[j] for j in row] for row in top.tolist()],
            classnames=list(self.classnames),
            indices=np.asarray(kept, dtype=np.int64),
            paths=[
                os.fspath(item) if isinstance(item, str | os.PathLike) else None
                for item in (items[i] for i in kept)
            ],
            failures=[(describe_input(items[i], i), reason) for i, reason in failed],
        )
