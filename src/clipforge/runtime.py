"""Where and at what precision inference runs: ``device`` and ``precision`` options.

``bf16`` / ``fp16`` are applied with autocast (``torch.autocast``), so the weights stay fp32
and the caller's model is never converted; on CPUs without bf16 arithmetic ``CLIP.encode_*``
widens bf16 products to fp32 kernels (see :mod:`clipforge.models.bf16_cpu`). ``int8`` runs an
int8-quantised copy of the model on the CPU (:mod:`clipforge.quantization`); ``auto`` is
resolved per device by :func:`resolve_precision`. Data-loading worker processes start with
:func:`freeze_inherited_heap`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TypeGuard, get_args

import torch

from .errors import ConfigError, UsageError

Precision = Literal["fp32", "bf16", "fp16", "int8", "auto"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = [
    "PRECISIONS",
    "Precision",
    "autocast",
    "check_precision",
    "cpu_bf16_flags",
    "resolve_device",
    "resolve_precision",
]


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


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's bf16 arithmetic features that were detected (``()``: none).

    x86: ``avx512_bf16`` / ``amx_bf16`` from torch's own probes and ``/proc/cpuinfo``;
    ARM: the ``bf16`` feature in ``/proc/cpuinfo``. Nothing is assumed when neither tells.
    """
    found: set[str] = set()
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    for flag, probe in probes.items():
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            found.add(flag)
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            words = set(value.split())
            found |= words & {"avx512_bf16", "amx_bf16"}
            if "bf16" in words and platform.machine().lower() in ("aarch64", "arm64"):
                found.add("bf16")
            break
    return tuple(sorted(found))


def resolve_precision(precision: str | None, device: torch.device | str = "cpu") -> Precision:
    """``precision`` with ``auto`` replaced by what ``device`` computes fastest.

    ``auto``: on CUDA bf16 where supported, else fp16; on a CPU bf16 where the CPU has bf16
    arithmetic (:func:`cpu_bf16_flags`: AVX-512 BF16 or AMX), else int8.
    """
    name = check_precision(precision)
    if name != "auto":
        return name
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_bf16_flags() else "int8"


@contextlib.contextmanager
def autocast(precision: str | None, device: torch.device) -> Iterator[None]:
    """Autocast to ``precision`` on ``device`` (a no-op for fp32 / ``None`` and for int8,
    whose model is already quantised: see :func:`clipforge.quantization.for_precision`)."""
    name = resolve_precision(precision, device)
    if name in ("fp32", "int8"):
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[name]):
        yield


def freeze_inherited_heap(_worker_id: int = 0) -> None:
    """Start of a forked DataLoader worker (``worker_init_fn``): freeze the heap copied from
    the parent, so the worker's collections never walk or free it.

    Freeing the parent's garbage there runs native destructors in a process without the
    parent's threads: Ray's GCS client, left in a reference cycle by Ray's start-up, aborts the
    worker that way. Walking it also writes to every inherited object, copying the pages the
    worker otherwise shares with the parent."""
    gc.freeze()
