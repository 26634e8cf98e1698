"""Quantised ONNX bundles: int8 (onnxruntime dynamic) or fp16 encoders, measured vs fp32.

``int8``: onnxruntime's dynamic quantisation, QOperator format (``DynamicQuantizeLinear`` +
``MatMulInteger``), per-channel int8 weights, of the matrix products with a weight: every
linear layer. Products of two activations (attention scores) stay float, as do embeddings
(``Gather``), norms and softmax. ``fp16``: every weight and operation in half precision
with float32 inputs and outputs (``keep_io_types``), for GPUs. The bundle's
``clipforge_onnx.json`` records the quantisation and the cosine of its embeddings with the
fp32 torch model's on a calibration set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..embedding import eval_mode
from ..models import CLIP
from ..quantization.accounting import (
    QuantizationReport,
    calibration_inputs,
    check_report,
    cosines,
    torch_encoder,
)
from ..quantization.calibration import Calibration, default_calibration, load_calibration
from .runtime import IMAGE_FILE, TEXT_FILE, OnnxClip

__all__ = ["QUANTIZATIONS", "quantize_bundle"]

Quantization = Literal["int8", "fp16"]
QUANTIZATIONS: tuple[str, ...] = ("int8", "fp16")
METHODS = {
    "int8": "onnxruntime dynamic int8 (QOperator MatMulInteger, per-channel weights)",
    "fp16": "onnxruntime fp16 weights and ops (float32 inputs and outputs)",
}


def _weight_products(model: Any) -> tuple[list[str], list[str]]:
    """``(matmuls with a weight, matmuls of two activations)`` by node name."""
    initializers = {init.name for init in model.graph.initializer}
    constants = {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    weighted, activations = [], []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        has_weight = any(name in initializers or name in constants for name in node.input[:2])
        (weighted if has_weight else activations).append(node.name)
    return weighted, activations


def _int8(source: Path, target: Path) -> dict[str, int]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import onnx

    _, activations = _weight_products(onnx.load(str(source), load_external_data=False))
    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=activations,
    )  # fmt: skip
    ops = [node.op_type for node in onnx.load(str(target)).graph.node]
    float_products = sum(op in ("MatMul", "Gemm") for op in ops)
    return {"int8_matmul": ops.count("MatMulInteger"), "float_matmul": float_products}


def _fp16(source: Path, target: Path) -> dict[str, int]:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    import onnx

    model = onnx.load(str(source))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(target))
    return {"fp16_initializers": len(converted.graph.initializer)}


def _calibration(calibration: Calibration | str | os.PathLike | None, size: int) -> Calibration:
    if calibration is None:
        return default_calibration(size=size)
    return calibration if isinstance(calibration, Calibration) else load_calibration(calibration)


def _onnx_encoder(bundle: OnnxClip):
    def encode(tower: str, inputs: torch.Tensor) -> torch.Tensor:
        array = inputs.numpy()
        out = bundle.encode_image(array) if tower == "image" else bundle.encode_text(array)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    return encode


def quantize_bundle(
    directory: str | os.PathLike,
    model: CLIP,
    quantization: str,
    *,
    calibration: Calibration | str | os.PathLike | None = None,
    max_degradation: float | None = None,
) -> QuantizationReport:
    """Turn the fp32 encoders of the bundle ``directory`` (exported from ``model``) into
    ``quantization`` ones in place, measure them against ``model`` and return the report
    (also checked: :func:`~clipforge.quantization.accounting.check_report`)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {list(QUANTIZATIONS)}, got {quantization!r}")
    directory = Path(directory)
    convert = _int8 if quantization == "int8" else _fp16
    modules: dict[str, int] = {}
    for filename in (IMAGE_FILE, TEXT_FILE):
        source = directory / filename
        staged = directory / f"{filename}.{quantization}.tmp"
        for key, count in convert(source, staged).items():
            modules[key] = modules.get(key, 0) + count
        os.replace(staged, source)
    data = _calibration(calibration, model.config.vision.image_size)
    inputs = calibration_inputs(model, data)
    with eval_mode(model):
        measured = cosines(torch_encoder(model), _onnx_encoder(OnnxClip(directory)), inputs)
    report = QuantizationReport(quantization, METHODS[quantization], data.describe(),
                                **measured, modules=modules)  # fmt: skip
    check_report(report, max_degradation)
    return report
