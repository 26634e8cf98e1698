"""OpenAI's key layout, shared by OpenAI's checkpoints and open_clip's ``CLIP`` models.

Ours is identical except that the text tower lives under ``text.``. OpenAI's releases are
single files (TorchScript or state dicts), so this format has no directory layout.
"""

from __future__ import annotations

import torch

from .base import CheckpointFormat

NAME = "openai"
_TEXT_KEYS = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)
# Metadata and non-persistent buffers found in OpenAI's TorchScript archives / old open_clip.
_IGNORED = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def matches(state: dict[str, torch.Tensor]) -> bool:
    """True for OpenAI/open_clip layout (top-level text keys or a ``visual.`` tower only)."""
    return "token_embedding.weight" in state or (
        any(k.startswith("visual.") for k in state)
        and not any(k.startswith("text.") for k in state)
    )


def _ignored(key: str) -> bool:
    return key.split(".")[-1] in _IGNORED


def to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI keys → clipforge keys."""
    out = {}
    for key, value in state.items():
        if _ignored(key):
            continue
        out[f"text.{key}" if key.startswith(_TEXT_KEYS) else key] = value
    return out


def from_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """clipforge keys → OpenAI keys."""
    return {k.removeprefix("text."): v for k, v in state.items()}


FORMAT = CheckpointFormat(
    name=NAME,
    matches=matches,
    to_native=to_native,
    from_native=from_native,
    priority=-10,  # its ``matches`` is the broadest (any visual-only state): try it last
)
