"""Preprocessing configuration: what the image pipeline does, as a frozen dataclass.

It lives with the other configs (architecture files declare a ``preprocess`` section and are
validated against it); :mod:`clipforge.preprocess` builds the pipeline from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast

from .engine import ConfigError, build

OPENAI_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INCEPTION_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
INCEPTION_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
RESIZE_MODES = ("shortest", "squash", "longest")
PIPELINES = ("openai", "hf")

# open_clip's ``preprocess_cfg`` spells two keys differently.
_ALIASES = {"size": "image_size"}


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    """Normalise a scalar or 3-sequence of numbers to a tuple of three finite floats."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value,) * 3
    try:
        # a bool or other non-sequence raises the TypeError handled here
        out = tuple(float(v) for v in cast(Iterable[Any], value))
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number or 3 numbers, got {value!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{name} must be 3 finite numbers, got {value!r}")
    return out[0], out[1], out[2]


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become model inputs: float32 tensors of shape ``(3, image_size, image_size)``.

    Attributes:
        image_size: output side length in pixels.
        mean, std: per-channel normalisation applied after scaling pixels to [0, 1].
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"`` (PIL filters).
        resize_mode: ``"shortest"`` (resize the shorter side, then centre crop; OpenAI),
            ``"squash"`` (resize to a square, ignoring aspect) or ``"longest"`` (resize the
            longer side, then pad to a square with ``fill_color``), as in open_clip.
        pipeline: ``"openai"`` reproduces open_clip/OpenAI's torchvision transform;
            ``"hf"`` reproduces transformers' PIL-based ``CLIPImageProcessor``.
        fill_color: padding value for ``resize_mode="longest"`` (openai pipeline only).
        draft: opt-in fast decoding (JPEG DCT scaling / ``Image.reduce``) for images much
            larger than ``image_size``; NOT bit-exact (see ``transforms.Preprocess``).
        max_num_patches, patch_size: set together for SigLIP 2 NaFlex (``pipeline="hf"``):
            each image keeps its aspect ratio, is resized to the largest grid of
            ``patch_size`` patches within the ``max_num_patches`` budget and becomes a padded
            patch sequence with its mask (transformers' ``Siglip2ImageProcessor``);
            ``image_size`` and ``resize_mode`` are then unused.
    """

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    resize_mode: Literal["shortest", "squash", "longest"] = "shortest"
    pipeline: Literal["openai", "hf"] = "openai"
    fill_color: int = 0
    draft: bool = False
    max_num_patches: int | None = None
    patch_size: int | None = None

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"image_size must be a positive int, got {size!r}")
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        object.__setattr__(self, "std", _triple("std", self.std))
        if any(s == 0.0 for s in self.std):
            raise ConfigError(f"std must be non-zero, got {self.std!r}")
        _check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        _check_choice("resize_mode", self.resize_mode, RESIZE_MODES)
        _check_choice("pipeline", self.pipeline, PIPELINES)
        fill = self.fill_color
        if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= 255:
            raise ConfigError(f"fill_color must be an int in [0, 255], got {fill!r}")
        if not isinstance(self.draft, bool):
            raise ConfigError(f"draft must be a bool, got {self.draft!r}")
        if self.pipeline == "hf" and self.resize_mode == "longest":
            raise ConfigError("resize_mode 'longest' is not available with pipeline 'hf'")
        if self.pipeline == "hf" and fill != 0:
            raise ConfigError("fill_color is not configurable with pipeline 'hf' (pads with 0)")
        self._check_naflex()

    def _check_naflex(self) -> None:
        budget, patch = self.max_num_patches, self.patch_size
        if budget is None and patch is None:
            return
        for name, value in (("max_num_patches", budget), ("patch_size", patch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{name} must be a positive int when NaFlex patching is set, got {value!r}"
                )
        if self.pipeline != "hf" or self.draft:
            raise ConfigError("NaFlex patching (max_num_patches) needs pipeline 'hf', no draft")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Build from a dict (as written by :meth:`to_dict`; open_clip's ``size`` accepted)."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            name = _ALIASES.get(key, key)
            if key == "mode":  # open_clip's PreprocessCfg.mode; only RGB exists
                if value != "RGB":
                    raise ConfigError(f"unknown mode {value!r}; only 'RGB' is supported")
                continue
            if name in kwargs:
                raise ConfigError(f"PreprocessConfig key {name!r} given twice (alias {key!r})")
            if name == "image_size" and isinstance(value, list | tuple):
                if len(set(value)) != 1:
                    raise ConfigError(f"only square image sizes are supported, got {value!r}")
                value = value[0]
            if name in ("mean", "std") and name in known:
                value = _triple(name, value)
            kwargs[name] = value
        return build(cls, kwargs, "preprocess")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists); inverse of :meth:`from_dict`."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        for key in ("max_num_patches", "patch_size"):  # only NaFlex pipelines carry them
            if d[key] is None:
                del d[key]
        return d
