"""Image captioning with a CoCa model: images in, decoded captions out, unreadable images
reported by path while the others are captioned."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import UsageError
from .models import CLIP, CoCa
from .preprocess import ImageDecodeError, load_image


@dataclass
class CaptionResult:
    """``captions``: ``(path, caption)`` in input order; ``failures``: ``(path, reason)``."""

    captions: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


def decode_caption(model: CLIP, ids: torch.Tensor, sot: int, eos: int, pad: int) -> str:
    """One generated id row as text: after the start id, up to the end id, without padding,
    decoded with the model's tokenizer."""
    tokenizer = model.get_tokenizer()
    decode = getattr(tokenizer, "decode", None)
    if decode is None:
        raise UsageError(f"the model's tokenizer ({type(tokenizer).__name__}) cannot decode ids")
    values = [int(i) for i in ids.tolist()]
    if values and values[0] == sot:
        values = values[1:]
    if eos in values:
        values = values[: values.index(eos)]
    return str(decode([v for v in values if v != pad])).strip()


def caption(
    model: CLIP, images: Sequence[str | os.PathLike[str]], batch_size: int = 8, **generate: Any
) -> CaptionResult:
    """Caption image files with a CoCa ``model`` (``generate``: :meth:`CoCa.generate`'s
    options, e.g. ``generation_type="top_p"``, ``num_beams=6``)."""
    if not isinstance(model, CoCa) or model.text_decoder is None:
        raise UsageError(
            f"captioning needs a CoCa model with its text decoder, not {model.config.vision.type!r}"
            " + no decoder (e.g. -m coca_ViT-B-32)"
        )
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    result = CaptionResult()
    loaded: list[tuple[str, torch.Tensor]] = []
    for path in images:
        try:
            pixels = model.preprocess(load_image(path))
        except ImageDecodeError as err:
            result.failures.append((os.fspath(path), err.reason))
            continue
        assert isinstance(pixels, torch.Tensor)
        loaded.append((os.fspath(path), pixels))
    device = next(model.parameters()).device
    sot, eos = generate.get("sot_token_id") or 49406, generate.get("eos_token_id") or 49407
    pad = model.pad_id if generate.get("pad_token_id") is None else generate["pad_token_id"]
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start : start + batch_size]
        ids = model.generate(torch.stack([p for _, p in chunk]).to(device), **generate)
        for (path, _), row in zip(chunk, ids, strict=True):
            result.captions.append((path, decode_caption(model, row, sot, eos, pad)))
    return result
