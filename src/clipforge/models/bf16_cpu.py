"""bf16 autocast on x86 CPUs without bf16 arithmetic (no AVX512-BF16, no AMX).

On such CPUs torch runs bf16 matrix products in a slow fallback, about 100 times slower than
fp32 (1.2 vs 169 GFLOP/s measured on a 2-core AVX2 EPYC), so ``torch.autocast("cpu",
torch.bfloat16)`` makes a CLIP model crawl. The bf16 hardware of other CPUs and GPUs
multiplies bf16 operands exactly and accumulates in fp32; :class:`WidenedBf16` does the same
thing with fp32 instructions: operands are rounded to bf16 (as autocast would cast them),
widened to fp32 (exact), multiplied with the fast fp32 kernels, and the result rounded to
bf16. Precision is that of a bf16 kernel with fp32 accumulation; speed is that of fp32.

``CLIP.encode_image`` / ``encode_text`` (and so ``CLIP.forward`` and training) enter
:func:`bf16_cpu_context`; calling a tower module directly bypasses it. It is a no-op unless
CPU autocast is on with bf16 and the CPU lacks bf16 arithmetic, so CUDA and bf16-capable
CPUs run torch's own kernels unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_MATMULS: frozenset[Callable[..., Any]] = frozenset(
    {
        F.linear,
        F.conv2d,
        F.scaled_dot_product_attention,
        torch.matmul,
        torch.Tensor.matmul,
        torch.Tensor.__matmul__,
        torch.mm,
        torch.bmm,
        torch.addmm,
        torch.baddbmm,
    }
)


@functools.cache
def cpu_has_bf16_arithmetic() -> bool:
    """False only on x86 CPUs known to lack AVX512-BF16 and AMX (other CPUs: assumed True)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    checks = [getattr(torch.cpu, name, None) for name in probes]
    if any(check is None for check in checks):
        return True  # cannot tell: leave torch's behaviour alone
    return any(check() for check in checks if check is not None)


def _round_and_widen(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(torch.bfloat16).float()
    return value


class WidenedBf16(TorchFunctionMode):
    """Run matmul-like ops on bf16-rounded operands with fp32 kernels; bf16 results."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func not in _MATMULS:
            return func(*args, **kwargs)
        args = tuple(_round_and_widen(a) for a in args)
        kwargs = {k: _round_and_widen(v) for k, v in kwargs.items()}
        with torch.autocast("cpu", enabled=False):
            out = func(*args, **kwargs)
        return out.to(torch.bfloat16)


def bf16_cpu_context(example: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """:class:`WidenedBf16` when it applies to a forward pass over ``example``, else a no-op."""
    if (
        example.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and not cpu_has_bf16_arithmetic()
    ):
        return WidenedBf16()
    return contextlib.nullcontext()
