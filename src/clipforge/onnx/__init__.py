"""ONNX export of the two encoders and a torch-free ONNX Runtime inference path.

``export_onnx`` needs torch; ``OnnxClip`` needs only numpy, pillow and onnxruntime.
"""

from __future__ import annotations

from typing import Any

from .runtime import OnnxClip

__all__ = ["OnnxClip", "export_onnx"]


def export_onnx(*args: Any, **kwargs: Any):
    """See :func:`clipforge.onnx.export.export_onnx` (imported lazily: it needs torch)."""
    from .export import export_onnx as _export

    return _export(*args, **kwargs)
