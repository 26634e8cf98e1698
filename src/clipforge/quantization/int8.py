"""int8 towers on the CPU: torch's dynamic quantisation of every linear layer.

Linear layers (attention q/k/v and output projections, MLPs, pooling heads) become
``torch.ao.nn.quantized.dynamic.Linear`` with per-output-channel int8 weight scales and
per-batch int8 activation scales (fbgemm/onednn ``x86`` kernels: AVX2 ``vpmaddubsw``,
AVX-512 VNNI, AMX). Patch/token embeddings, norms, softmax, rotary tables and projections
held as plain parameters (ViT ``proj``, CLIP ``text_projection``) stay in float. The fused q/k/v projections of :class:`SelfAttention` and
:class:`EvaAttention` are functional (``F.linear`` on a parameter), so the copy swaps those
modules for equivalents whose fused projection is an ``nn.Linear`` first.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, cast

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from torch.ao.quantization.qconfig import per_channel_dynamic_qconfig
from torch.ao.quantization.quantize import quantize_dynamic

from ..models import CLIP
from ..models.eva import EvaAttention
from ..models.layers import SelfAttention

__all__ = ["count_quantized", "quantize_linear_int8"]


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias=bias is not None)
    layer.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone())
    return layer


class Int8SelfAttention(SelfAttention):
    """:class:`SelfAttention` with its fused projection as a module (``in_proj``)."""

    def __init__(self, source: SelfAttention) -> None:
        nn.Module.__init__(self)
        self.heads, self.causal = source.heads, source.causal
        self.in_proj = _linear(source.in_proj_weight, source.in_proj_bias)
        self.out_proj = source.out_proj

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return self.in_proj(x)

    def _project_at(
        self, x: torch.Tensor, rows: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row projected at once, so activations are quantised as in ``forward``."""
        return _query_kv(self.in_proj(x), rows, index)


class Int8EvaAttention(EvaAttention):
    """:class:`EvaAttention` with its fused projection as a module (``in_proj``)."""

    def __init__(self, source: EvaAttention) -> None:
        nn.Module.__init__(self)
        self.heads = source.heads
        self.in_proj = _linear(source.in_proj_weight, source._bias())
        self.ln = source.ln
        self.out_proj = source.out_proj

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return self.in_proj(x)

    def _project_cls(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _query_kv(self.in_proj(x), slice(None), 0)


def _query_kv(qkv: torch.Tensor, rows: Any, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The query of ``qkv[rows, index]`` ``(N, width)`` and every key and value."""
    width = qkv.shape[-1] // 3
    return qkv[rows, index, :width], qkv[..., width:]


_SWAPS: dict[type[nn.Module], type[nn.Module]] = {
    SelfAttention: Int8SelfAttention,
    EvaAttention: Int8EvaAttention,
}


def _swap_fused_projections(module: nn.Module) -> None:
    for name, child in module.named_children():
        swap = _SWAPS.get(type(child))
        if swap is not None:
            setattr(module, name, swap(child))  # type: ignore[call-arg]
        else:
            _swap_fused_projections(child)


def quantize_linear_int8(model: CLIP) -> CLIP:
    """An int8 copy of ``model`` (fp32, on the CPU): every linear layer dynamically quantised
    with per-channel weight scales; ``model`` itself is left unchanged."""
    source = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    _swap_fused_projections(source)
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; its kernels are still the
        # faster than onnxruntime's on the ViT-B-32 image tower here (docs: Deployment on CPU)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        spec = {nn.Linear: per_channel_dynamic_qconfig}
        quantized = quantize_dynamic(source, spec, dtype=torch.qint8)
    return cast(CLIP, quantized)


def count_quantized(model: nn.Module) -> dict[str, int]:
    """``{"int8_linear": n, "float_linear": m}``: how many linear layers run in int8."""
    modules = list(model.modules())
    return {
        "int8_linear": sum(isinstance(m, DynamicLinear) for m in modules),
        "float_linear": sum(type(m) is nn.Linear for m in modules),
    }
