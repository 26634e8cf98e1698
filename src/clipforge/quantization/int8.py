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
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from torch.ao.quantization.qconfig import per_channel_dynamic_qconfig
from torch.ao.quantization.quantize import quantize_dynamic

from ..models import CLIP
from ..models.eva import EvaAttention, Rope
from ..models.layers import SelfAttention

__all__ = ["count_quantized", "quantize_linear_int8"]


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias=bias is not None)
    layer.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone())
    return layer


class Int8SelfAttention(nn.Module):
    """:class:`SelfAttention` with its fused projection as a module (``in_proj``)."""

    def __init__(self, source: SelfAttention) -> None:
        super().__init__()
        self.heads, self.causal = source.heads, source.causal
        self.in_proj = _linear(source.in_proj_weight, source.in_proj_bias)
        self.out_proj = source.out_proj

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``attn_mask`` as :meth:`SelfAttention.forward` takes it (NaFlex padding)."""
        batch, length, width = x.shape
        qkv = self.in_proj(x).view(batch, length, 3, self.heads, width // self.heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=attn_mask, is_causal=self.causal
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))

    def forward_at(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``forward(x)[rows, index]`` (see :meth:`SelfAttention.forward_at`)."""
        batch, length, width = x.shape
        head_dim = width // self.heads
        rows = torch.arange(batch, device=x.device)
        qkv = self.in_proj(x).view(batch, length, 3, self.heads, head_dim)
        q = qkv[rows, index, 0].view(batch, self.heads, 1, head_dim)
        kv = qkv[:, :, 1:].permute(2, 0, 3, 1, 4)
        mask = None
        if self.causal:
            positions = torch.arange(length, device=x.device)
            mask = (positions <= index[:, None]).view(batch, 1, 1, length)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        return self.out_proj(out.reshape(batch, width))


class Int8EvaAttention(EvaAttention):
    """:class:`EvaAttention` with its fused projection as a module (``in_proj``)."""

    def __init__(self, source: EvaAttention) -> None:
        nn.Module.__init__(self)
        self.heads = source.heads
        self.in_proj = _linear(source.in_proj_weight, source._bias())
        self.ln = source.ln
        self.out_proj = source.out_proj

    def forward(self, x: torch.Tensor, rope: Rope | None) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.in_proj(x).view(batch, length, 3, self.heads, width // self.heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q, k = self._rotate(qkv[0], rope), self._rotate(qkv[1], rope)
        out = F.scaled_dot_product_attention(q, k, qkv[2])
        return self._out(out.transpose(1, 2).reshape(batch, length, width))

    def forward_cls(self, x: torch.Tensor, rope: Rope | None) -> torch.Tensor:
        """``forward(x, rope)[:, 0]`` (see :meth:`EvaAttention.forward_cls`)."""
        batch, length, width = x.shape
        head_dim = width // self.heads
        qkv = self.in_proj(x).view(batch, length, 3, self.heads, head_dim)
        q = qkv[:, 0, 0].view(batch, self.heads, 1, head_dim)
        kv = qkv[:, :, 1:].permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, self._rotate(kv[0], rope), kv[1])
        return self._out(out.reshape(batch, width))


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
