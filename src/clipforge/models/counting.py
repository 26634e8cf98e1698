"""Exact parameter counts for any architecture, registered formula or not."""

from __future__ import annotations

from ..configs import ClipConfig
from ..configs.param_counts import count_parameters as count_by_formula, has_parameter_formula
from .factory import build_model
from .meta import on_meta_device

__all__ = ["count_parameters"]


def count_parameters(cfg: ClipConfig) -> dict[str, int]:
    """``{"image", "text", "total"}`` as ``CLIP(cfg).num_parameters()`` reports: from the
    towers' registered formulas, else by building the model on the ``meta`` device."""
    if has_parameter_formula(cfg):
        return count_by_formula(cfg)
    with on_meta_device():
        return build_model(cfg).num_parameters()
