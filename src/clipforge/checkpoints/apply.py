"""Put translated weights into a model, with one clear error for any mismatch."""

from __future__ import annotations

import torch
from torch import nn

from ..models import towers_in
from .errors import CheckpointMismatchError

_TOWER_PREFIXES = {"image": ("visual.",), "text": ("text.",)}
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def select_towers(state: dict[str, torch.Tensor], towers: str) -> dict[str, torch.Tensor]:
    """Drop the weights of the tower that is not loaded."""
    if towers == "both":
        return state
    keep = _TOWER_PREFIXES[towers]
    return {k: v for k, v in state.items() if k.startswith(keep) or "." not in k}


def check_state(
    expected: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor], source: str
) -> None:
    """Raise :class:`CheckpointMismatchError` listing every key of ``state`` that does not fit
    the ``expected`` shapes (works with shapes of a model built on the ``meta`` device)."""
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        (k, tuple(v.shape), expected[k])
        for k, v in state.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched)


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a model's state dict."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def prepare_towers(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Let each tower adapt its structure to ``state`` first (a FastViT built in training
    form folds itself when the weights are folded)."""
    for name, tower in towers_in(model):
        tower.prepare_state(state, f"{name}." if name else "")


def apply_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``; raise :class:`CheckpointMismatchError` listing all problems."""
    prepare_towers(model, state)
    check_state(state_shapes(model), state, source)
    model.load_state_dict(state, strict=False)
