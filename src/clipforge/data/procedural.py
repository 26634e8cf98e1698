"""Procedural image-caption data: coloured shapes with counts and spatial relations.

Everything is generated on the fly from ``numpy`` randomness and drawn with PIL, so training,
demos and tests run offline. Scenes probe CLIP's known weak spots: attribute binding
("a red circle and a blue square"), counting ("three yellow stars") and spatial relations
("two small red circles left of a large blue square").

Held-out rule (``split="test"``): with ``COLOURS`` and ``SHAPES`` in their fixed order, the
(colour, shape) pair ``(COLOURS[c], SHAPES[s])`` is held out iff ``(c - s) % len(SHAPES) == 0``
(see ``HELD_OUT_PAIRS``: red circle, green square, blue triangle, yellow star, purple cross,
orange circle, white square). Every colour and every shape still occurs in training, only in
other combinations. ``train``/``val`` scenes never contain a held-out pair; every ``test`` scene
contains at least one, so zero-shot results on ``test`` measure compositional generalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 190, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 235, 0),
    "purple": (150, 0, 210),
    "orange": (255, 140, 0),
    "white": (255, 255, 255),
}
SIZES: tuple[str | None, ...] = (None, "small", "large")  # None: medium, not named in captions
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
KINDS: tuple[str, ...] = ("single", "count", "binding", "spatial")
DIFFICULTIES: dict[str, tuple[str, ...]] = {
    "easy": ("single",),
    "medium": ("single", "count", "binding"),
    "hard": ("count", "binding", "spatial"),
    "mixed": KINDS,
    **{kind: (kind,) for kind in KINDS},
}

ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    (c, s)
    for ci, c in enumerate(COLOURS)
    for si, s in enumerate(SHAPES)
    if (ci - si) % len(SHAPES) == 0
)
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p not in HELD_OUT_PAIRS)
TEST_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p in HELD_OUT_PAIRS)
CLASSNAMES: tuple[str, ...] = tuple(f"{c} {s}" for c, s in ALL_PAIRS)

_SIZE_FRACTION = {None: 0.22, "small": 0.16, "large": 0.30}  # side / image side
_MAX_COUNT = {None: 5, "small": 5, "large": 3}  # whole canvas
_MAX_COUNT_HALF = {None: 3, "small": 3, "large": 2}  # half canvas (spatial scenes)
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class ObjectSpec:
    """A group of ``count`` identical-looking objects."""

    shape: str
    colour: str
    size: str | None = None  # "small", "large" or None (medium, unnamed)
    count: int = 1

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {tuple(COLOURS)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; expected one of {SIZES}")
        if not 1 <= self.count < len(_NUMBERS):
            raise ValueError(f"count must be in [1, {len(_NUMBERS) - 1}], got {self.count}")


@dataclass(frozen=True)
class SceneSpec:
    """Object groups; ``relation`` (if set) places ``objects[0]`` relative to ``objects[1]``."""

    objects: Sequence[ObjectSpec] = ()  # stored as a tuple, so specs are hashable
    relation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if not self.objects:
            raise ValueError("a scene needs at least one object group")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r}; expected {RELATIONS}")
            if len(self.objects) != 2:
                raise ValueError("a relation needs exactly two object groups")

    @property
    def pairs(self) -> set[tuple[str, str]]:
        """The (colour, shape) pairs present in the scene."""
        return {(o.colour, o.shape) for o in self.objects}


# ----------------------------------------------------------------------------- captions
def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s")


def _phrase(obj: ObjectSpec) -> str:
    words = [w for w in (obj.size, obj.colour) if w]
    noun = obj.shape if obj.count == 1 else _plural(obj.shape)
    if obj.count == 1:
        article = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([article, *words, noun])
    return " ".join([_NUMBERS[obj.count], *words, noun])


def caption_scene(spec: SceneSpec) -> str:
    """Natural caption, e.g. ``"two small red circles left of a large blue square"``."""
    phrases = [_phrase(o) for o in spec.objects]
    if spec.relation is not None:
        return f"{phrases[0]} {spec.relation} {phrases[1]}"
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


# ----------------------------------------------------------------------------- rendering
Box = tuple[int, int, int]  # x0, y0, side


def _regions(spec: SceneSpec, w: int, h: int) -> list[tuple[int, int, int, int]]:
    """Placement region (x0, y0, x1, y1) per group; disjoint halves when a relation is set."""
    full = (0, 0, w, h)
    if spec.relation is None:
        return [full] * len(spec.objects)
    gap = max(2, w // 16)
    left, right = (0, 0, (w - gap) // 2, h), ((w + gap) // 2, 0, w, h)
    top, bottom = (0, 0, w, (h - gap) // 2), (0, (h + gap) // 2, w, h)
    first, second = {
        "left of": (left, right),
        "right of": (right, left),
        "above": (top, bottom),
        "below": (bottom, top),
    }[spec.relation]
    return [first, second]


def _layout(
    spec: SceneSpec, w: int, h: int, rng: np.random.Generator, scale: float
) -> list[list[Box]] | None:
    """Random non-overlapping boxes per group, or ``None`` if some object did not fit."""
    pad = max(1, w // 32)
    placed: list[Box] = []
    groups: list[list[Box]] = []
    for obj, (rx0, ry0, rx1, ry1) in zip(spec.objects, _regions(spec, w, h), strict=True):
        boxes: list[Box] = []
        for _ in range(obj.count):
            jitter = rng.uniform(0.9, 1.1)
            side = max(3, int(round(_SIZE_FRACTION[obj.size] * min(w, h) * scale * jitter)))
            if side > rx1 - rx0 or side > ry1 - ry0:
                return None
            for _attempt in range(100):
                x = int(rng.integers(rx0, rx1 - side + 1))
                y = int(rng.integers(ry0, ry1 - side + 1))
                if all(
                    x + side + pad <= bx
                    or bx + bs + pad <= x
                    or y + side + pad <= by
                    or by + bs + pad <= y
                    for bx, by, bs in placed
                ):
                    break
            else:
                return None
            placed.append((x, y, side))
            boxes.append((x, y, side))
        groups.append(boxes)
    return groups


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: Box, fill: tuple[int, int, int]
) -> None:
    x, y, s = box
    x1, y1 = x + s - 1, y + s - 1
    if shape == "circle":
        draw.ellipse((x, y, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x, y, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(x + (s - 1) / 2, y), (x1, y1), (x, y1)], fill=fill)
    elif shape == "star":
        cx, cy, r_out = x + (s - 1) / 2, y + (s - 1) / 2, (s - 1) / 2
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r_out, 0.45 * r_out)
        xs, ys = cx + radii * np.cos(angles), cy + radii * np.sin(angles) + 0.1 * r_out
        draw.polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=fill)
    elif shape == "cross":
        t = max(1, s // 3)
        o = (s - t) // 2
        draw.rectangle((x + o, y, x + o + t - 1, y1), fill=fill)
        draw.rectangle((x, y + o, x1, y + o + t - 1), fill=fill)
    else:  # pragma: no cover - guarded by ObjectSpec
        raise ValueError(shape)


def render_scene(
    spec: SceneSpec,
    image_size: int = 64,
    rng: np.random.Generator | int | None = None,
) -> Image.Image:
    """Draw ``spec`` as an RGB image on a plain or lightly noisy grey background.

    Objects never overlap and are filled with the exact ``COLOURS`` value (no anti-aliasing);
    with a relation every object of group 0 lies strictly on the stated side of group 1.
    """
    return render_scene_with_boxes(spec, image_size, rng)[0]


def render_scene_with_boxes(
    spec: SceneSpec,
    image_size: int = 64,
    rng: np.random.Generator | int | None = None,
) -> tuple[Image.Image, list[list[Box]]]:
    """:func:`render_scene` plus where every object was drawn: per group of ``spec.objects``,
    one ``(x0, y0, side)`` square box per object (the shape lies inside it)."""
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    rng = np.random.default_rng(rng)
    size = image_size
    grey = float(rng.integers(40, 121))
    bg = np.full((size, size, 3), grey, dtype=np.float32)
    if rng.random() < 0.5:
        bg += rng.normal(0.0, 6.0, size=(size, size, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(np.rint(bg), 0, 255).astype(np.uint8))
    groups = None
    scale = 1.0
    while groups is None:
        if scale < 0.3:
            raise ValueError(f"scene does not fit in {size}x{size}: {spec}")
        groups = _layout(spec, size, size, rng, scale)
        scale *= 0.9
    draw = ImageDraw.Draw(image)
    for obj, boxes in zip(spec.objects, groups, strict=True):
        for box in boxes:
            _draw_shape(draw, obj.shape, box, COLOURS[obj.colour])
    return image, groups


# ----------------------------------------------------------------------------- sampling
def _pick(rng: np.random.Generator, seq: tuple[Any, ...]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def sample_scene(rng: np.random.Generator, split: str = "train", kind: str = "single") -> SceneSpec:
    """Sample a scene of ``kind`` ("single", "count", "binding", "spatial") for ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    n_groups = 2 if kind in ("binding", "spatial") else 1
    forced = int(rng.integers(n_groups)) if split == "test" else -1
    pairs: list[tuple[str, str]] = []
    for i in range(n_groups):
        pool = TEST_PAIRS if i == forced else (ALL_PAIRS if split == "test" else TRAIN_PAIRS)
        while True:  # binding: differ in colour and shape; spatial: differ in the pair
            c, s = _pick(rng, pool)
            if all(
                (c != pc and s != ps) if kind == "binding" else (c, s) != (pc, ps)
                for pc, ps in pairs
            ):
                break
        pairs.append((c, s))
    objects = []
    for c, s in pairs:
        size = _pick(rng, SIZES)
        if kind == "count":
            count = int(rng.integers(1, _MAX_COUNT[size] + 1))
        elif kind == "spatial":
            count = min(_pick(rng, (1, 1, 2, 3)), _MAX_COUNT_HALF[size])
        else:
            count = 1
        objects.append(ObjectSpec(s, c, size, count))
    relation = _pick(rng, RELATIONS) if kind == "spatial" else None
    return SceneSpec(objects, relation)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class ProceduralCaptions(Dataset):
    """Deterministic procedural (image, caption) dataset.

    Item ``i`` is regenerated from ``np.random.default_rng([seed, split_id, i])``, so it is
    identical across instances, DataLoader workers and resumed runs. ``difficulty`` is one of
    ``DIFFICULTIES`` ("easy", "medium", "hard", "mixed", or a single kind). Returns
    ``(image, caption)``: image is ``transform(pil)`` if given, else a float (3, H, W) tensor in
    [0, 1]; caption is a str, or 1-D LongTensor token ids if ``tokenizer`` is given.
    """

    def __init__(
        self,
        size: int,
        image_size: int = 64,
        seed: int = 0,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        tokenizer: Callable[[str], Any] | None = None,
        difficulty: str = "mixed",
    ) -> None:
        if size < 0 or seed < 0:
            raise ValueError("size and seed must be non-negative")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {difficulty!r}; expected {tuple(DIFFICULTIES)}")
        self.size, self.image_size, self.seed = size, image_size, seed
        self.split, self.difficulty = split, difficulty
        self.transform, self.tokenizer = transform, tokenizer

    def __len__(self) -> int:
        return self.size

    def _rng(self, index: int) -> np.random.Generator:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        return np.random.default_rng([self.seed, SPLITS[self.split], index % self.size])

    def _spec(self, rng: np.random.Generator) -> SceneSpec:
        return sample_scene(rng, self.split, _pick(rng, DIFFICULTIES[self.difficulty]))

    def spec(self, index: int) -> SceneSpec:
        """The scene behind item ``index`` (cheap: nothing is rendered)."""
        return self._spec(self._rng(index))

    def render(self, index: int) -> tuple[SceneSpec, Image.Image]:
        """The scene and its PIL image for item ``index``, before transform/tokenizer."""
        rng = self._rng(index)
        spec = self._spec(rng)
        return spec, render_scene(spec, self.image_size, rng)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        spec, pil = self.render(index)
        image = self.transform(pil) if self.transform is not None else _to_tensor(pil)
        caption: Any = caption_scene(spec)
        if self.tokenizer is not None:
            ids = torch.as_tensor(self.tokenizer(caption)).long()
            if ids.ndim == 2 and ids.shape[0] == 1:
                ids = ids[0]
            if ids.ndim != 1:
                raise ValueError(
                    f"tokenizer must return (L,) or (1, L) ids, got {tuple(ids.shape)}"
                )
            caption = ids
        return image, caption

    @staticmethod
    def classnames() -> list[str]:
        """Zero-shot class names: every "colour shape" pair (see ``zero_shot_task``)."""
        return list(CLASSNAMES)

    @staticmethod
    def class_prompts(template: str = "a photo of a {}.") -> list[str]:
        """``template`` filled with each class name, in ``classnames()`` order."""
        return [template.format(name) for name in CLASSNAMES]


def zero_shot_task(
    split: str = "test", n_per_class: int = 3
) -> tuple[list[str], list[tuple[SceneSpec, int]]]:
    """A single-object colour+shape classification task.

    Class names are all ``CLASSNAMES`` ("red circle", ...); samples cover only the held-out
    pairs for ``"test"``, only the training pairs for ``"train"``/``"val"``, every pair for
    ``"all"``; ``n_per_class`` samples per pair cycle through the sizes. Render with
    ``render_zero_shot``.
    """
    pools = {"train": TRAIN_PAIRS, "val": TRAIN_PAIRS, "test": TEST_PAIRS, "all": ALL_PAIRS}
    if split not in pools:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(pools)}")
    samples = [
        (SceneSpec([ObjectSpec(s, c, SIZES[k % len(SIZES)])]), CLASSNAMES.index(f"{c} {s}"))
        for c, s in pools[split]
        for k in range(n_per_class)
    ]
    return list(CLASSNAMES), samples


def render_zero_shot(
    samples: list[tuple[SceneSpec, int]], image_size: int = 64, seed: int = 0
) -> list[tuple[Image.Image, int]]:
    """Render ``zero_shot_task`` samples deterministically (sample ``i`` uses ``[seed, 3, i]``)."""
    return [
        (render_scene(spec, image_size, np.random.default_rng([seed, 3, i])), label)
        for i, (spec, label) in enumerate(samples)
    ]
