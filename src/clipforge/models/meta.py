"""Build models on the ``meta`` device (shapes only) without running their initialisation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["on_meta_device"]

#: Tensor methods that fill a tensor in place with random values (``torch.nn.init``'s
#: functions are matched by module). On ``meta`` they change nothing, and torch runs them
#: through its Python reference kernels, whose first call imports ``torch._dynamo``
#: (~1.5 s in a fresh process: every CLI command that loads a checkpoint paid it).
_RANDOM_FILLS = frozenset(
    {
        torch.Tensor.normal_,
        torch.Tensor.uniform_,
        torch.Tensor.bernoulli_,
        torch.Tensor.exponential_,
        torch.Tensor.random_,
        torch.Tensor.log_normal_,
        torch.Tensor.cauchy_,
        torch.Tensor.geometric_,
    }
)


class _SkipMetaInit(TorchFunctionMode):
    """Initialisers applied to a meta tensor return it untouched (it holds no values)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes keywords
        if isinstance(target, torch.Tensor) and target.is_meta and _is_initialiser(func):
            return target
        return func(*args, **kwargs)


def _is_initialiser(func: Any) -> bool:
    return func in _RANDOM_FILLS or getattr(func, "__module__", None) == "torch.nn.init"


@contextlib.contextmanager
def on_meta_device() -> Iterator[None]:
    """``with torch.device("meta")`` that skips ``torch.nn.init`` and random in-place fills
    on meta tensors: the same modules and shapes, no values computed."""
    with torch.device("meta"), _SkipMetaInit():
        yield
