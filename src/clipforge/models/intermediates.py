"""Shared logic of every tower's ``forward_intermediates``: index resolution, the block loop
with ``stop_early``, and the token-output formats (open_clip 3.x / timm semantics).

- ``indices``: ``None`` → every block; an ``int`` n → the last n blocks; a sequence → those
  block indices (negative ones count from the end). Intermediates come out in block order.
- ``stop_early``: blocks after the last requested one are not run; the final features are
  then pooled from the last block that ran (as open_clip does).
- ``output_fmt``: ``"NLC"`` (tokens) or ``"NCHW"`` (patch tokens as a feature map);
  prefix (class) tokens are split off and returned only with ``output_extra_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Indices = int | Sequence[int] | None
Intermediates = dict[str, torch.Tensor | list[torch.Tensor]]
OUTPUT_FORMATS = ("NCHW", "NLC")


def take_indices(num_blocks: int, indices: Indices = None) -> tuple[list[int], int]:
    """Absolute block indices to return and the largest of them (open_clip's
    ``feature_take_indices``); a ``ValueError`` names an index out of range."""
    if indices is None:
        indices = num_blocks
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"last-n indices={indices} is out of range (1 to {num_blocks})")
        taken = list(range(num_blocks - indices, num_blocks))
    else:
        taken = []
        for i in indices:
            idx = num_blocks + i if i < 0 else i
            if not 0 <= idx < num_blocks:
                raise ValueError(f"block index {i} is out of range for {num_blocks} blocks")
            taken.append(idx)
        if not taken:
            raise ValueError("indices is an empty sequence: ask for at least one block")
    return taken, max(taken)


def run_blocks(
    blocks: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    indices: Indices = None,
    stop_early: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``x`` through ``blocks`` (callables ``x -> x``), keeping the outputs of the
    requested ones; with ``stop_early`` the blocks after the last requested one are skipped.
    Returns the last computed ``x`` and the kept outputs (block order)."""
    taken, last = take_indices(len(blocks), indices)
    wanted = set(taken)
    kept = []
    for i, block in enumerate(blocks[: last + 1] if stop_early else blocks):
        x = block(x)
        if i in wanted:
            kept.append(x)
    return x, kept


def check_format(output_fmt: str, allowed: Sequence[str] = OUTPUT_FORMATS) -> None:
    """A ``ValueError`` unless ``output_fmt`` is one of ``allowed``."""
    if output_fmt not in allowed:
        raise ValueError(f"output_fmt must be one of {', '.join(allowed)}, got {output_fmt!r}")


def split_tokens(
    states: list[torch.Tensor],
    num_prefix: int,
    grid: tuple[int, int],
    output_fmt: str,
    output_extra_tokens: bool,
) -> Intermediates:
    """``image_intermediates`` (patch tokens, NLC or NCHW) and, with ``output_extra_tokens``
    and a tower that has prefix tokens, ``image_intermediates_prefix`` ``(N, prefix, C)``."""
    check_format(output_fmt)
    out: Intermediates = {}
    patches = [y[:, num_prefix:] for y in states]
    if output_fmt == "NCHW":
        patches = [
            y.reshape(y.shape[0], *grid, -1).permute(0, 3, 1, 2).contiguous() for y in patches
        ]
    out["image_intermediates"] = patches
    if num_prefix and output_extra_tokens:
        out["image_intermediates_prefix"] = [y[:, :num_prefix] for y in states]
    return out


def image_grid(pixels: torch.Tensor, patch_size: int) -> tuple[int, int]:
    """The patch grid ``(rows, cols)`` of a ``(N, 3, H, W)`` batch."""
    return pixels.shape[-2] // patch_size, pixels.shape[-1] // patch_size


@dataclass(frozen=True)
class IntermediatesRequest:
    """What a ``forward_intermediates`` call asks for (open_clip 3.x's arguments), built once
    by :meth:`Tower.forward_intermediates` and handed to the tower's ``intermediates`` hook."""

    indices: Indices = None
    stop_early: bool = False
    normalize_intermediates: bool = False
    intermediates_only: bool = False
    output_fmt: str = "NLC"
    output_extra_tokens: bool = False


@dataclass(frozen=True)
class TokenPass:
    """A transformer tower's embedded tokens and how to run, normalise and pool them.

    ``blocks`` are callables ``x -> x``; ``kind`` is ``"image"`` or ``"text"`` (the key
    prefix); ``norm`` is the final norm (applied to intermediates with
    ``normalize_intermediates``); ``pool`` maps the last computed ``(N, L, C)`` tokens to the
    tower's features; ``grid`` is the patch grid of image towers (NCHW output, prefix split).
    """

    blocks: Sequence[Callable[[torch.Tensor], torch.Tensor]]
    tokens: torch.Tensor
    kind: str
    norm: Callable[[torch.Tensor], torch.Tensor]
    pool: Callable[[torch.Tensor], torch.Tensor]
    num_prefix: int = 0
    grid: tuple[int, int] | None = None


def token_intermediates(plan: TokenPass, request: IntermediatesRequest) -> Intermediates:
    """The whole ``forward_intermediates`` of a transformer tower, from its :class:`TokenPass`."""
    fmt = request.output_fmt
    check_format(fmt, OUTPUT_FORMATS if plan.grid is not None else ("NLC",))
    x, states = run_blocks(plan.blocks, plan.tokens, request.indices, request.stop_early)
    if request.normalize_intermediates:
        states = [plan.norm(y) for y in states]
    out: Intermediates
    if plan.grid is not None:
        out = split_tokens(states, plan.num_prefix, plan.grid, fmt, request.output_extra_tokens)
    else:
        out = {f"{plan.kind}_intermediates": states}
    if not request.intermediates_only:
        out[f"{plan.kind}_features"] = plan.pool(x)
    return out


def stage_intermediates(
    stages: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    request: IntermediatesRequest,
    head: Callable[[torch.Tensor], torch.Tensor],
) -> Intermediates:
    """``forward_intermediates`` of a convolutional tower from its stem output ``x``: stage
    outputs NCHW (``"NLC"`` flattens them), features ``head`` of the last map computed. There
    is no final norm and no prefix token (``normalize_intermediates`` and
    ``output_extra_tokens`` do nothing, as in open_clip/timm); the head needs the last stage,
    so ``stop_early`` skips stages only with ``intermediates_only``."""
    check_format(request.output_fmt)
    stop = request.stop_early and request.intermediates_only
    x, maps = run_blocks(stages, x, request.indices, stop)
    maps = [m.contiguous() for m in maps]
    if request.output_fmt == "NLC":
        maps = [m.flatten(2).transpose(1, 2) for m in maps]
    out: Intermediates = {"image_intermediates": maps}
    if not request.intermediates_only:
        out["image_features"] = head(x)
    return out
