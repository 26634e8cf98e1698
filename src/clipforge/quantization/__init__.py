"""int8 models on the CPU, measured against fp32 when they are made.

:func:`quantize` returns an int8 copy of a model (:mod:`.int8`: torch's dynamic int8
linear layers, per-channel weights) with a :class:`QuantizationReport` attached as
``model.quantization_report``: the cosine between its embeddings and fp32's on a calibration
set, checked against a tolerance (a warning) and ``max_degradation`` (refused).
:func:`for_precision` is the one place a ``precision`` picks the model that runs: every
embedding helper calls it, so ``precision="int8"`` works wherever ``precision`` does.
"""

from __future__ import annotations

import copy
import os
import threading
import weakref
from typing import cast

import torch

from ..errors import UsageError
from ..models import CLIP, ClipModel
from ..runtime import Precision, resolve_precision
from .accounting import (
    DEFAULT_WARN_BELOW,
    QuantizationError,
    QuantizationReport,
    QuantizationWarning,
    calibration_inputs,
    check_report,
    cosines,
    torch_encoder,
)
from .calibration import Calibration, default_calibration, load_calibration
from .int8 import count_quantized, quantize_linear_int8

__all__ = [
    "Calibration",
    "apply_precision",
    "QuantizationError",
    "QuantizationReport",
    "QuantizationWarning",
    "default_calibration",
    "for_precision",
    "is_quantized",
    "load_calibration",
    "prepare_int8",
    "quantize",
    "quantize_as",
    "report_of",
]

METHOD = "torch.ao dynamic int8 (per-channel weights, per-batch activations; x86 kernels)"
_TWINS: weakref.WeakKeyDictionary[torch.nn.Module, CLIP] = weakref.WeakKeyDictionary()
_TWINS_LOCK = threading.Lock()


def report_of(model: object) -> QuantizationReport | None:
    """The :class:`QuantizationReport` of an int8 model made by :func:`quantize`, else None."""
    report = getattr(model, "quantization_report", None)
    return report if isinstance(report, QuantizationReport) else None


def is_quantized(model: object) -> bool:
    """Whether ``model`` is an int8 model made by :func:`quantize`."""
    return report_of(model) is not None


def _calibration(calibration: Calibration | str | os.PathLike | None, size: int) -> Calibration:
    if calibration is None:
        return default_calibration(size=size)
    if isinstance(calibration, Calibration):
        return calibration
    return load_calibration(calibration)


def quantize(
    model: CLIP,
    precision: str = "int8",
    *,
    calibration: Calibration | str | os.PathLike | None = None,
    max_degradation: float | None = None,
    warn_below: float = DEFAULT_WARN_BELOW,
) -> CLIP:
    """An int8 copy of ``model`` on the CPU (``model`` is unchanged), measured against it.

    ``calibration``: a :class:`Calibration`, a folder of images (and ``*.txt`` prompts), or
    ``None`` for the built-in set. The result's ``quantization_report`` holds the cosines;
    a tower whose mean cosine is below ``warn_below`` gets a :class:`QuantizationWarning`,
    and a degradation (``1 - cosine``) above ``max_degradation`` raises
    :class:`QuantizationError`.
    """
    if precision != "int8":
        raise UsageError(f"quantize: precision must be 'int8', got {precision!r}")
    if is_quantized(model):
        raise UsageError("quantize: this model is already int8")
    if max_degradation is not None and not 0.0 <= max_degradation <= 2.0:
        raise UsageError(f"max_degradation must be in [0, 2], got {max_degradation}")
    # measured against the fp32 CPU model (a copy only when ``model`` is not one)
    source = model if _fp32_cpu(model) else copy.deepcopy(model).to("cpu", torch.float32)
    quantized = quantize_linear_int8(source)
    data = _calibration(calibration, model.config.vision.image_size)
    inputs = calibration_inputs(source, data)
    with torch.inference_mode():
        measured = cosines(torch_encoder(source.eval()), torch_encoder(quantized), inputs)
    report = QuantizationReport("int8", METHOD, data.describe(), **measured,
                                modules=count_quantized(quantized))  # fmt: skip
    check_report(report, max_degradation, warn_below)
    quantized.quantization_report = report  # type: ignore[attr-defined]
    return quantized


def quantize_as(model: CLIP, report: QuantizationReport) -> CLIP:
    """The int8 copy :func:`quantize` makes of ``model``, carrying ``report`` from an earlier
    :func:`quantize` of the same weights instead of measuring again: how a worker process
    runs the model its driver measured (and accepted) once."""
    if report.precision != "int8":
        raise UsageError(f"quantize_as: the report is of {report.precision}, not int8")
    quantized = quantize_linear_int8(model)
    quantized.quantization_report = report  # type: ignore[attr-defined]
    return quantized


def _fp32_cpu(model: torch.nn.Module) -> bool:
    return all(
        p.device.type == "cpu" and p.dtype == torch.float32
        for p in model.parameters()
        if p.is_floating_point()
    )


def for_precision(model: ClipModel, precision: str | None) -> tuple[ClipModel, Precision]:
    """The model to run for ``precision`` and the autocast precision to run it under.

    ``int8`` (or ``auto`` resolved to it): an int8 model as is, else its int8 twin (made
    once per model object with the built-in calibration, then reused; call
    :func:`quantize` yourself for a calibration set or ``max_degradation``). An int8 model
    runs as it is under ``None`` / ``fp32`` / ``int8`` and refuses bf16 / fp16.
    """
    device = next(model.parameters()).device
    name = resolve_precision(precision, device)
    if is_quantized(model):
        if name in ("bf16", "fp16"):
            raise UsageError(f"precision {name}: this model is int8 (use precision='int8')")
        return model, "fp32"
    if name != "int8":
        return model, name
    if device.type != "cpu":
        raise UsageError(f"precision int8 runs on the CPU; the model is on {device}")
    return prepare_int8(model), "fp32"


def prepare_int8(
    model: ClipModel,
    *,
    calibration: Calibration | str | os.PathLike | None = None,
    max_degradation: float | None = None,
) -> CLIP:
    """The int8 twin :func:`for_precision` runs for ``model``: made now (with these
    :func:`quantize` settings) unless it exists, then reused. Make it up front to measure,
    and refuse, before any work."""
    with _TWINS_LOCK:
        twin = _TWINS.get(cast(torch.nn.Module, model))
        if twin is None:
            twin = quantize(
                cast(CLIP, model), calibration=calibration, max_degradation=max_degradation
            )
            _TWINS[cast(torch.nn.Module, model)] = twin
    return twin


def apply_precision(
    model: CLIP,
    precision: str | None,
    *,
    calibration: Calibration | str | os.PathLike | None = None,
    max_degradation: float | None = None,
) -> CLIP:
    """``model`` for ``precision``: its measured int8 copy (:func:`quantize`) when
    ``precision`` is (or ``auto`` resolves to) int8, else ``model`` itself (other
    precisions run under autocast)."""
    device = next(model.parameters()).device
    if resolve_precision(precision, device) != "int8" or is_quantized(model):
        return model
    return quantize(model, calibration=calibration, max_degradation=max_degradation)
