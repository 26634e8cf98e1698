"""Build an architecture with random weights and run one image and one caption through it:
the model zoo's smoke test (``clipforge selfcheck``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .api import create_model
from .checkpoints.errors import CheckpointError
from .models import ClipModel
from .quantization import for_precision, report_of
from .runtime import autocast

__all__ = ["SelfCheck", "check_architecture"]


@dataclass(frozen=True)
class SelfCheck:
    """What one architecture did: parameter counts, embedding size, a cosine and timings.

    ``image`` / ``text``: the normalised embeddings it computed (float32, CPU).
    ``quantization``: the int8 model's report (``QuantizationReport.to_dict()``) when it ran
    at int8, else None; ``quantize_seconds``: the time to make and measure it.
    """

    name: str
    parameters: dict[str, int]
    embed_dim: int
    cosine: float
    build_seconds: float
    image_ms: float
    text_ms: float
    image: torch.Tensor = field(repr=False, compare=False, default_factory=lambda: torch.empty(0))
    text: torch.Tensor = field(repr=False, compare=False, default_factory=lambda: torch.empty(0))
    quantization: dict[str, Any] | None = None
    quantize_seconds: float = 0.0


def _caption_tokens(model: ClipModel) -> torch.Tensor:
    """A caption's ids; random ids when the family's tokenizer files are not on this machine
    (SigLIP's vocabulary is fetched from the hub on first use) — the towers are what is checked.
    """
    try:
        return model.tokenize(["a photo of a cat"])
    except CheckpointError:
        text = model.config.text
        generator = torch.Generator().manual_seed(0)
        return torch.randint(1, text.vocab_size, (1, text.context_length), generator=generator)


def check_architecture(
    name: str, device: torch.device | str = "cpu", precision: str = "fp32"
) -> SelfCheck:
    """Build ``name`` (seed 0), encode a random image and a caption; raise if not finite.

    ``precision`` picks the model that runs as every embedding helper does
    (:func:`~clipforge.quantization.for_precision`): int8 runs the measured int8 copy.
    """
    start = time.perf_counter()
    torch.manual_seed(0)
    built_model = create_model(name).eval().to(device)
    built = time.perf_counter() - start
    start = time.perf_counter()
    model, autocast_precision = for_precision(built_model, precision)
    quantize_seconds = time.perf_counter() - start if model is not built_model else 0.0
    report = report_of(model)
    size = model.config.vision.image_size
    with torch.inference_mode(), autocast(autocast_precision, torch.device(device)):
        start = time.perf_counter()
        image = model.encode_image(torch.rand(1, 3, size, size, device=device), normalize=True)
        image_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        tokens = _caption_tokens(model).to(device)
        text = model.encode_text(tokens, normalize=True)
        text_ms = (time.perf_counter() - start) * 1e3
    image, text = image.float().cpu(), text.float().cpu()
    if not (torch.isfinite(image).all() and torch.isfinite(text).all()):
        raise RuntimeError("non-finite embeddings")
    return SelfCheck(
        name=name,
        parameters=built_model.num_parameters(),
        embed_dim=image.shape[-1],
        cosine=(image @ text.T).item(),
        build_seconds=built,
        image_ms=image_ms,
        text_ms=text_ms,
        image=image,
        text=text,
        quantization=None if report is None else report.to_dict(),
        quantize_seconds=quantize_seconds,
    )
