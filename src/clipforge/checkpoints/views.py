"""Validate tensor views declared by a checkpoint before anything is allocated.

A pickle or TorchScript archive declares each tensor as ``(storage, offset, size, stride)``.
A hostile file can declare a stride-0 view of a one-element storage with a size of 10**12:
free to read, but every copy of it (``clone``, ``load_state_dict``) allocates terabytes.
These checks admit only in-bounds, non-overlapping views, as ``torch.save`` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .errors import CheckpointError


def _as_ints(values: Sequence[object], what: str, where: str) -> tuple[int, ...]:
    try:
        items = tuple(values)
    except TypeError:
        raise CheckpointError(f"{where}: tensor {what} is not a sequence: {values!r}") from None
    ints = tuple(v for v in items if type(v) is int)
    if len(ints) != len(items):
        raise CheckpointError(f"{where}: tensor {what} must be integers, got {items!r}")
    return ints


def check_view(
    size: Sequence[object], stride: Sequence[object], offset: object, storage_numel: int, where: str
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """``(size, stride, offset)`` of a view that stays inside its storage and never reads
    one element twice; :class:`CheckpointError` naming ``where`` otherwise."""
    size_t, stride_t = _as_ints(size, "size", where), _as_ints(stride, "stride", where)
    if type(offset) is not int or offset < 0:
        raise CheckpointError(f"{where}: invalid storage offset {offset!r}")
    if len(size_t) != len(stride_t) or any(s < 0 for s in size_t + stride_t):
        raise CheckpointError(f"{where}: invalid view size {size_t} / stride {stride_t}")
    dims = sorted((st, sz) for sz, st in zip(size_t, stride_t, strict=True) if sz > 1)
    if 0 in size_t:
        return size_t, stride_t, offset
    extent = 1  # elements spanned by the dimensions seen so far (smallest stride first)
    for st, sz in dims:
        if st < extent:
            raise CheckpointError(
                f"{where}: refused a stride-0 or overlapping view (size {list(size_t)}, "
                f"stride {list(stride_t)}): it would read elements repeatedly and expand "
                "into far more memory than the file holds"
            )
        extent = st * (sz - 1) + extent
    if offset + extent > storage_numel:
        raise CheckpointError(
            f"{where}: view (offset {offset}, size {list(size_t)}, stride {list(stride_t)}) "
            f"reaches past the end of its storage of {storage_numel} elements"
        )
    return size_t, stride_t, offset


def check_tensors(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse any tensor of a loaded state dict that is an overlapping or stride-0 view."""
    for key, tensor in state.items():
        numel = tensor.untyped_storage().nbytes() // max(1, tensor.element_size())
        check_view(
            tensor.shape, tensor.stride(), tensor.storage_offset(), numel, f"{source}: {key}"
        )
