"""Check a model config against its checkpoint before any real tensor is allocated.

A config read from a checkpoint (or inferred from its key names) is untrusted: an HF
``config.json`` declaring ``num_hidden_layers: 1000000`` would build a model far larger
than the machine. :func:`check_fits` refuses, in order and allocating nothing:

1. a model larger than a parameter cap (:data:`DEFAULT_MAX_PARAMETERS`, override with
   ``max_parameters=`` or ``CLIPFORGE_MAX_PARAMETERS``), counted from the config alone;
2. a model with more blocks than the checkpoint has keys (each block owns several);
3. any key or shape that differs between the checkpoint and the model built on the
   ``meta`` device (:class:`CheckpointMismatchError`).
"""

from __future__ import annotations

import os

import torch

from ..configs import ClipConfig
from ..models import count_parameters
from ..models.clip import Towers
from ..models.factory import build_model
from ..models.meta import on_meta_device
from .apply import check_state, prepare_towers, state_shapes
from .errors import CheckpointError

#: Largest model :func:`clipforge.load` builds unless told otherwise (ViT-bigG-14: 2.5e9).
DEFAULT_MAX_PARAMETERS = 5_000_000_000
MAX_PARAMETERS_ENV = "CLIPFORGE_MAX_PARAMETERS"
_COUNT_KEY = {"both": "total", "image": "image", "text": "text"}


def parameter_cap(max_parameters: int | None = None) -> int:
    """The cap in force: the argument, else ``$CLIPFORGE_MAX_PARAMETERS``, else the default."""
    if max_parameters is not None:
        return int(max_parameters)
    raw = os.environ.get(MAX_PARAMETERS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PARAMETERS
    try:
        return int(float(raw))
    except ValueError:
        raise CheckpointError(f"{MAX_PARAMETERS_ENV}={raw!r} is not a number") from None


def describe(cfg: ClipConfig) -> str:
    """The size-deciding fields of a config, e.g. ``vision.layers=12, vision.width=768, ...``."""
    fields = []
    for tower in ("vision", "text"):
        sub = getattr(cfg, tower)
        fields += [
            f"{tower}.{name}={getattr(sub, name)}"
            for name in ("layers", "width", "image_size", "context_length", "vocab_size")
            if name in getattr(sub, "__dataclass_fields__", {})
        ]
    return ", ".join(fields + [f"embed_dim={cfg.embed_dim}"])


def check_fits(
    cfg: ClipConfig,
    state: dict[str, torch.Tensor],
    source: str,
    towers: Towers = "both",
    max_parameters: int | None = None,
) -> None:
    """Raise :class:`CheckpointError` unless ``cfg`` is within the cap and ``state`` fits it
    exactly; ``source`` (the config or checkpoint file) is named in every message."""
    need = count_parameters(cfg)[_COUNT_KEY[towers]]
    cap = parameter_cap(max_parameters)
    if need > cap:
        raise CheckpointError(
            f"{source}: the model config asks for {need:,} parameters ({describe(cfg)}), "
            f"over the limit of {cap:,}; refused before allocating. If the model is really "
            f"that large, pass max_parameters= or set {MAX_PARAMETERS_ENV}"
        )
    blocks = _depth(cfg.vision) * (towers != "text") + _depth(cfg.text) * (towers != "image")
    if blocks > len(state):
        raise CheckpointError(
            f"{source}: the model config has {blocks:,} blocks ({describe(cfg)}) but the "
            f"checkpoint holds only {len(state):,} tensors: the config does not describe "
            "these weights"
        )
    check_state(meta_shapes(cfg, towers, state), state, source)


def _depth(tower_config: object) -> int:
    """Blocks of a tower config (``layers``: a depth or per-stage depths; 0 if undeclared)."""
    layers = getattr(tower_config, "layers", 0)
    return sum(layers) if isinstance(layers, tuple | list) else int(layers)


def meta_shapes(
    cfg: ClipConfig, towers: Towers = "both", state: dict[str, torch.Tensor] | None = None
) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of ``CLIP(cfg)``, built on the ``meta`` device (no memory used);
    with ``state``, of the model adapted to it (a FastViT folded for folded weights)."""

    with on_meta_device():
        model = build_model(cfg, towers=towers)
        if state is not None:
            prepare_towers(model, state)
        return state_shapes(model)
