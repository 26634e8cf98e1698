"""Where and at what precision inference runs: ``device`` and ``precision`` options.

``precision`` is applied with autocast (``torch.autocast``), so the weights stay fp32 and
the caller's model is never converted; on CPUs without bf16 arithmetic ``CLIP.encode_*``
widens bf16 products to fp32 kernels (see :mod:`clipforge.models.bf16_cpu`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal, TypeGuard, get_args

import torch

from .errors import ConfigError, UsageError

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["PRECISIONS", "Precision", "autocast", "check_precision", "resolve_device"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` means CUDA when available, else the CPU.

    Raises ``ValueError`` for a malformed name or a CUDA device that is not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UsageError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r}: CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise UsageError(f"device {device!r}: this machine has {count} CUDA device(s)")
    return resolved


def check_precision(precision: str | None) -> Precision:
    """``precision`` validated (``None`` means fp32)."""
    if precision is None:
        return "fp32"
    if not _is_precision(precision):
        raise ConfigError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    return precision


def _is_precision(name: str) -> TypeGuard[Precision]:
    return name in PRECISIONS


@contextlib.contextmanager
def autocast(precision: str | None, device: torch.device) -> Iterator[None]:
    """Autocast to ``precision`` on ``device`` (a no-op for fp32 / ``None``)."""
    name = check_precision(precision)
    if name == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[name]):
        yield
