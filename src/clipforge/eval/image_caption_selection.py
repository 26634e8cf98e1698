"""``image_caption_selection``: pick the true caption among hard negatives.

A built-in probe set rendered offline with the procedural shape renderer
(:mod:`clipforge.data.procedural`), SugarCrepe/Winoground style — each image has its true
caption and one minimally changed negative, so chance is 1/2:

* ``binding`` — "a red circle and a blue square" vs the colours swapped;
* ``counting`` — "three stars" vs one more or one fewer;
* ``spatial`` — "a red circle left of a blue square" vs the opposite relation.

The model "selects" the caption with the highest image-text cosine (ties count as wrong).
Metrics: ``<probe>_acc`` and ``<probe>_chance`` per probe, ``acc`` over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..configs import ConfigError
from ..data.procedural import COLOURS, SHAPES, ObjectSpec, SceneSpec, caption_scene, render_scene
from ..embedding import embed_images, embed_texts
from .output import EvalOutput

__all__ = ["PROBES", "Options", "details", "probe_set", "run"]

PROBES = ("binding", "counting", "spatial")
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@dataclass
class Options:
    """Options of ``image_caption_selection``."""

    probes: list[str] = field(default_factory=lambda: list(PROBES))
    n_per_probe: int = 50
    image_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown or not self.probes:
            raise ConfigError(f"image_caption_selection: probes must be among {PROBES}")
        if self.n_per_probe < 1 or self.image_size < 16:
            raise ConfigError("image_caption_selection: n_per_probe >= 1, image_size >= 16")


def _two_objects(rng: np.random.Generator) -> tuple[Any, Any]:

    colours = rng.choice(list(COLOURS), size=2, replace=False)
    shapes = rng.choice(list(SHAPES), size=2, replace=False)
    return ObjectSpec(str(shapes[0]), str(colours[0])), ObjectSpec(str(shapes[1]), str(colours[1]))


def _probe(kind: str, rng: np.random.Generator) -> tuple[Any, str, list[str]]:
    """``(scene, true caption, [negative captions])`` for one probe of ``kind``."""


    if kind == "binding":
        a, b = _two_objects(rng)
        scene = SceneSpec([a, b])
        swapped = SceneSpec([replace(a, colour=b.colour), replace(b, colour=a.colour)])
        return scene, caption_scene(scene), [caption_scene(swapped)]
    if kind == "counting":
        count = int(rng.integers(1, 5))
        other = count + 1 if count == 1 or rng.random() < 0.5 else count - 1
        obj = ObjectSpec(str(rng.choice(list(SHAPES))), str(rng.choice(list(COLOURS))), None, count)
        scene = SceneSpec([obj])
        return scene, caption_scene(scene), [caption_scene(SceneSpec([replace(obj, count=other)]))]
    a, b = _two_objects(rng)
    relation = str(rng.choice(list(_OPPOSITE)))
    scene = SceneSpec([a, b], relation)
    return scene, caption_scene(scene), [caption_scene(SceneSpec([a, b], _OPPOSITE[relation]))]


def probe_set(kind: str, n: int, image_size: int = 64, seed: int = 0) -> list[tuple]:
    """``n`` probes of ``kind``: ``(image, true caption, [negatives])``, deterministic in seed."""

    rng = np.random.default_rng([seed, PROBES.index(kind)])
    out = []
    for _ in range(n):
        scene, true, negatives = _probe(kind, rng)
        out.append((render_scene(scene, image_size, rng), true, negatives))
    return out


def details(model: Any, data: Any, options: Options) -> EvalOutput:
    """Selection accuracy per probe, with chance levels and examples."""

    del data  # the probes are rendered here
    metrics: dict[str, float] = {}
    examples: list[dict[str, Any]] = []
    images_shown: list[Any] = []
    correct_all = []
    for kind in options.probes:
        probes = probe_set(kind, options.n_per_probe, options.image_size, options.seed)
        image_emb = embed_images(model, [image for image, _, _ in probes]).embeddings
        texts = [[true, *negatives] for _, true, negatives in probes]
        text_emb = embed_texts(model, [t for group in texts for t in group])
        text_emb = text_emb.reshape(len(probes), len(texts[0]), -1)
        all_scores = np.einsum("ncd,nd->nc", text_emb, image_emb)
        correct = (all_scores[:, 0] > all_scores[:, 1:].max(axis=1)).tolist()
        for row in range(min(4, len(probes))):
            examples.append({"probe": kind, "captions": texts[row],
                             "scores": all_scores[row].tolist(), "correct": correct[row]})  # fmt: skip
            images_shown.append(probes[row][0])
        metrics[f"{kind}_acc"] = float(np.mean(correct))
        metrics[f"{kind}_chance"] = 1.0 / (1 + len(probes[0][2]))
        correct_all.extend(correct)
    metrics["acc"] = float(np.mean(correct_all))
    n = len(correct_all)
    return EvalOutput(
        metrics=metrics,
        counts={"images": n, "evaluated": n, "failed": 0},
        details={"examples": examples, "_example_images": images_shown},
    )


def run(model: Any, data: Any, options: Options) -> dict[str, float]:
    """Selection accuracy per probe and overall."""
    return details(model, data, options).metrics
