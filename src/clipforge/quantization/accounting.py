"""Accuracy accounting: a quantised model's embeddings against fp32's on a calibration set.

Every quantised model (and ONNX bundle) carries a :class:`QuantizationReport`: the mean
and worst cosine between its embeddings and the fp32 model's, per tower. Above a tolerance
(``warn_below``) a :class:`QuantizationWarning` is issued; ``max_degradation`` refuses the
model (:class:`QuantizationError`) when ``1 - cosine`` of any tower exceeds it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from ..errors import InputError
from ..models import CLIP
from .calibration import Calibration

__all__ = [
    "DEFAULT_WARN_BELOW",
    "QuantizationError",
    "QuantizationReport",
    "QuantizationWarning",
    "calibration_inputs",
    "check_report",
    "cosines",
]

#: mean cosine below which a quantised tower is reported with a warning
DEFAULT_WARN_BELOW = 0.99
_BATCH = 32


class QuantizationWarning(UserWarning):
    """A quantised tower's embeddings moved further from fp32's than the tolerance."""


class QuantizationError(InputError):
    """A quantised model degrades more than ``max_degradation`` allows (it is refused)."""

    http_status = 422


@dataclass
class QuantizationReport:
    """How a quantised model was made and how far its embeddings are from fp32's.

    ``image_cosine`` / ``text_cosine``: mean cosine over the calibration set (``None`` for a
    tower the model lacks); ``*_min``: the worst item. ``degradation``: ``1 -`` the lower
    mean cosine of the two towers.
    """

    precision: str
    method: str
    calibration: str
    image_cosine: float | None = None
    image_cosine_min: float | None = None
    text_cosine: float | None = None
    text_cosine_min: float | None = None
    modules: dict[str, int] = field(default_factory=dict)

    @property
    def degradation(self) -> float:
        """``1 - min(image_cosine, text_cosine)`` (0 when nothing was measured)."""
        measured = [c for c in (self.image_cosine, self.text_cosine) if c is not None]
        return 1.0 - min(measured) if measured else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus ``degradation``."""
        return {**asdict(self), "degradation": round(self.degradation, 6)}

    def summary(self) -> str:
        """One line: precision, cosines and calibration set."""
        parts = [
            f"{tower} cosine {mean:.4f} (worst {worst:.4f})"
            for tower, mean, worst in (
                ("image", self.image_cosine, self.image_cosine_min),
                ("text", self.text_cosine, self.text_cosine_min),
            )
            if mean is not None and worst is not None
        ]
        return f"{self.precision} vs fp32: {', '.join(parts)} on {self.calibration}"


def _tokens(model: CLIP, texts: list[str]) -> torch.Tensor:
    """The prompts' token ids; a model without a tokenizer gets fixed pseudo-random ids."""
    try:
        return model.tokenize(texts)
    except ValueError:
        config = model.config.text
        generator = torch.Generator().manual_seed(0)
        return torch.randint(1, config.vocab_size, (len(texts), config.context_length),
                             generator=generator)  # fmt: skip


def calibration_inputs(model: CLIP, calibration: Calibration) -> dict[str, Any]:
    """Preprocessed ``pixels`` (a NaFlex tower's patches batched by ``default_collate``) and
    ``tokens`` for the towers ``model`` has."""
    inputs: dict[str, Any] = {}
    if model.visual is not None and calibration.images:
        inputs["image"] = default_collate([model.preprocess(im) for im in calibration.images])
    if model.text is not None and calibration.texts:
        inputs["text"] = _tokens(model, calibration.texts)
    return inputs


Encoder = Callable[[str, torch.Tensor], torch.Tensor]


def torch_encoder(model: CLIP) -> Encoder:
    """``encode(tower, inputs)`` with ``model`` on the CPU in inference mode."""

    def encode(tower: str, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            fn = model.encode_image if tower == "image" else model.encode_text
            return torch.cat([fn(chunk).float() for chunk in inputs.split(_BATCH)])

    return encode


def cosines(reference: Encoder, candidate: Encoder,
            inputs: dict[str, torch.Tensor]) -> dict[str, float]:  # fmt: skip
    """``{"image_cosine": mean, "image_cosine_min": worst, "text_...": ...}``."""
    out: dict[str, float] = {}
    for tower, batch in inputs.items():
        a = F.normalize(reference(tower, batch), dim=-1)
        b = F.normalize(candidate(tower, batch), dim=-1)
        values = (a * b).sum(-1).double().numpy()
        out[f"{tower}_cosine"] = round(float(np.mean(values)), 6)
        out[f"{tower}_cosine_min"] = round(float(np.min(values)), 6)
    return out


def check_report(report: QuantizationReport, max_degradation: float | None,
                 warn_below: float = DEFAULT_WARN_BELOW) -> None:  # fmt: skip
    """Refuse (``max_degradation``) or warn (``warn_below``) as the module describes."""
    if max_degradation is not None and report.degradation > max_degradation:
        raise QuantizationError(
            f"{report.precision} model refused: degradation {report.degradation:.4f} "
            f"(1 - cosine vs fp32) exceeds --max-degradation {max_degradation} "
            f"({report.summary()})"
        )
    if report.degradation > 1.0 - warn_below:
        warnings.warn(
            f"{report.summary()}: below the tolerance {warn_below}", QuantizationWarning,
            stacklevel=3,
        )
