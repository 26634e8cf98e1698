"""clipforge's own layout: ``visual.*``, ``text.*``, ``logit_scale`` (see models/)."""

from __future__ import annotations

import torch

NAME = "clipforge"
CONFIG_FILE = "clipforge_config.json"
WEIGHTS_FILE = "model.safetensors"


def matches(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("text.") for k in state) or (
        any(k.startswith("visual.") for k in state) and "token_embedding.weight" not in state
    )


def to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(state)


def from_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(state)
