"""Sequence packing for causal text towers: several prompts share one row of the context.

A causal tower that pools one position per prompt (its end-of-text token) never needs the
padding after it. Trimming the batch to its longest prompt still pads every shorter one;
packing puts prompts end to end in rows of :data:`PACK_ROW` tokens (at least the context
length), each attending only to its own earlier tokens (a block-diagonal causal mask) with
its own positions. The linear layers, most of the work, then run on the real tokens only:
with prompts of mixed lengths (search queries, captions) about 1.5x fewer token rows at
batch 8 and 2–3x at batch 256.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PACK_ROW = 128
"""Tokens per packed row (at least the context length): a few short prompts share one row;
longer rows make the block-diagonal attention, computed whole, cost more than it saves."""
MIN_SAVING = 0.8
"""Pack only when the packed token rows are at most this fraction of the trimmed batch's."""


@dataclass(frozen=True)
class Packing:
    """Where each prompt went: ``tokens``/``positions`` ``(rows, length)`` (padding: id 0,
    position 0), ``mask`` ``(rows, 1, length, length)`` (True = attend), and each prompt's
    pooled position as ``(row, column)``."""

    tokens: torch.Tensor
    positions: torch.Tensor
    mask: torch.Tensor
    pool_row: torch.Tensor
    pool_col: torch.Tensor


def plan_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Prompt indices per row: first-fit over the prompts longest first (each fits alone,
    as no prompt is longer than ``capacity``)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        size = lengths[index]
        row = next((r for r, room in enumerate(free) if room >= size), None)
        if row is None:
            rows.append([index])
            free.append(capacity - size)
        else:
            rows[row].append(index)
            free[row] -= size
    return rows


def pack(
    tokens: torch.Tensor, pool_positions: torch.Tensor, capacity: int
) -> Packing | None:
    """The packing of ``tokens`` ``(N, L)`` (prompt ``i`` ends at ``pool_positions[i]``) into
    rows of at most ``capacity``; ``None`` when it would save less than :data:`MIN_SAVING`."""
    lengths = (pool_positions + 1).tolist()
    rows = plan_rows(lengths, capacity)
    width = max(sum(lengths[i] for i in row) for row in rows)
    if len(rows) * width > MIN_SAVING * len(lengths) * max(lengths):
        return None
    places: list[tuple[int, int, int, int]] = []  # (prompt, position, row, column)
    pool: list[tuple[int, int]] = [(0, 0)] * len(lengths)  # each prompt's (row, column)
    for r, row in enumerate(rows):
        start = 0
        for index in row:
            size = lengths[index]
            places += [(index, p, r, start + p) for p in range(size)]
            pool[index] = (r, start + size - 1)
            start += size
    prompt, position, row_of, column = torch.tensor(places).T
    packed = torch.zeros(len(rows), width, dtype=tokens.dtype)
    packed[row_of, column] = tokens.cpu()[prompt, position]
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    positions[row_of, column] = position
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    segments[row_of, column] = prompt
    pool_row, pool_col = torch.tensor(pool).T
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = (segments[:, :, None] == segments[:, None, :]) & causal  # padding: among itself
    device = tokens.device
    return Packing(
        packed.to(device),
        positions.to(device),
        mask[:, None].to(device),
        pool_row.to(device),
        pool_col.to(device),
    )
