"""Infer a :class:`ClipConfig` from the shapes of a (clipforge-layout) state dict.

Like OpenAI's ``build_model``: widths, depths, patch and image sizes follow from tensor
shapes. Head counts and the activation are not visible in weights; when the shapes equal a
built-in architecture its values are used, otherwise a head width of 64 is assumed.
"""

from __future__ import annotations

import re

import torch

from ..configs import (
    ClipConfig,
    ResNetConfig,
    TextConfig,
    ViTConfig,
    get_config,
    list_architectures,
)
from .errors import CheckpointError


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of blocks ``prefix{i}.*``; the indices must run 0..n-1 without a gap (a stray
    ``resblocks.999999`` key would otherwise make a million-layer model)."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    keys = {}
    for key in state:
        if m := pattern.match(key):
            keys.setdefault(int(m[1]), key)
    count = len(keys)
    if keys and max(keys) != count - 1:
        stray = keys[max(keys)]
        gap = min(set(range(count + 1)) - set(keys))
        raise CheckpointError(
            f"weight {stray!r} is block {max(keys)}, but block {gap} is missing "
            f"({count} blocks under {prefix}*): not a consistent checkpoint"
        )
    return count


def _grid(positions: int) -> int:
    side = round((positions - 1) ** 0.5)
    if side * side + 1 != positions:
        raise CheckpointError(f"positional embedding of {positions} rows is not a square grid + 1")
    return side


def _infer_vit(state: dict[str, torch.Tensor]) -> ViTConfig:
    conv = state["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    layers = _count_blocks(state, "visual.transformer.resblocks.")
    mlp = state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    grid = _grid(state["visual.positional_embedding"].shape[0])
    return ViTConfig(
        image_size=grid * patch,
        patch_size=patch,
        width=width,
        layers=layers,
        heads=max(1, width // 64),
        mlp_ratio=mlp / width,
    )


def _infer_resnet(state: dict[str, torch.Tensor]) -> ResNetConfig:
    c1, c2, c3, c4 = (_count_blocks(state, f"visual.layer{i}.") for i in (1, 2, 3, 4))
    layers = (c1, c2, c3, c4)
    width = state["visual.layer1.0.conv1.weight"].shape[0]
    grid = _grid(state["visual.attnpool.positional_embedding"].shape[0])
    return ResNetConfig(image_size=grid * 32, layers=layers, width=width, heads=width * 32 // 64)


def _infer_text(state: dict[str, torch.Tensor]) -> TextConfig:
    width = state["text.ln_final.weight"].shape[0]
    return TextConfig(
        context_length=state["text.positional_embedding"].shape[0],
        vocab_size=state["text.token_embedding.weight"].shape[0],
        width=width,
        heads=max(1, width // 64),
        layers=_count_blocks(state, "text.transformer.resblocks."),
        mlp_ratio=state["text.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
    )


def _shape_key(cfg: ClipConfig) -> tuple:
    vision = {k: v for k, v in cfg.vision.__dict__.items() if k != "heads"}
    text = {k: v for k, v in cfg.text.__dict__.items() if k != "heads"}
    return (
        type(cfg.vision),
        tuple(sorted(vision.items())),
        tuple(sorted(text.items())),
        cfg.embed_dim,
    )


def match_architecture(cfg: ClipConfig) -> str | None:
    """Name of the built-in architecture whose weights have exactly these shapes, if any."""
    key = _shape_key(cfg)
    for name in list_architectures():
        if _shape_key(get_config(name)) == key:
            return name
    return None


def infer_config(state: dict[str, torch.Tensor]) -> ClipConfig:
    """The architecture of a clipforge-layout state dict (either tower may be absent)."""
    try:
        if "visual.proj" in state:
            vision: ViTConfig | ResNetConfig = _infer_vit(state)
            embed_dim = state["visual.proj"].shape[1]
        elif "visual.attnpool.c_proj.weight" in state:
            vision = _infer_resnet(state)
            embed_dim = state["visual.attnpool.c_proj.weight"].shape[0]
        else:
            vision, embed_dim = ViTConfig(), None
        text = _infer_text(state) if "text.ln_final.weight" in state else TextConfig()
        if "text.text_projection" in state:
            embed_dim = state["text.text_projection"].shape[1]
    except KeyError as err:
        raise CheckpointError(f"cannot infer the architecture: weight {err} is missing") from err
    except (IndexError, ValueError, ZeroDivisionError) as err:  # wrong ranks, zero sizes
        raise CheckpointError(
            f"cannot infer the architecture from the weights' shapes: {err}"
        ) from err
    if embed_dim is None:
        raise CheckpointError("cannot infer the architecture: no image or text tower weights")
    cfg = ClipConfig(embed_dim=embed_dim, vision=vision, text=text)
    name = match_architecture(cfg)
    if name is not None:
        known = get_config(name)
        cfg = cfg.replace(vision=known.vision, text=known.text)
    return cfg
