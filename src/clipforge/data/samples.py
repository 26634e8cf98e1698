"""What data sources hand to evaluation: labelled images and captioned images.

A data source declares what it yields (:class:`~clipforge.data.sources.DataSource`):
training batches (its ``builder``), labelled images (``labelled``) and/or image-caption
pairs (``captions``). Evaluation reads every registered source through these two readers,
so a source registered for training can be evaluated too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..configs import ConfigError

__all__ = ["CaptionedImages", "LabelledImages", "Prompts", "subset_indices"]

#: templates with ``{c}``, or per-class prompts (CuPL-style)
Prompts = list[str] | dict[str, list[str]]


@dataclass
class LabelledImages:
    """A classification dataset: ``images[i]`` (path or PIL image) has class ``labels[i]``.

    ``named_labels``: the labels came from class *names* in the data (a table's label
    strings), so other class names are matched by name, not by position.
    ``exact_classes``: ``classnames`` is the dataset's whole class list; ``False`` when it
    was only inferred from the labels seen (a table of integer labels), so more class names
    may be given.
    """

    images: list[Any]
    labels: np.ndarray
    classnames: list[str]
    templates: Prompts | str | None  # None: the caller's default
    failures: list[tuple[str, str]] = field(default_factory=list)  # unreadable, left out
    named_labels: bool = False
    exact_classes: bool = True


@dataclass
class CaptionedImages:
    """Unique images (first-appearance order) and each one's captions; ``languages``, when
    the source has them (a table's ``language`` column), holds each caption's language."""

    images: list[str]
    captions: list[list[str]]
    languages: list[list[str]] | None = None


def subset_indices(n: int, limit: int | None) -> np.ndarray:
    """``limit`` evenly spaced indices of ``range(n)`` (all of them if ``limit`` is None)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))
