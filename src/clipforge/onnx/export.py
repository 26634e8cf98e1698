"""Export a CLIP model's image and text encoders to ONNX (dynamic batch)."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..models import CLIP
from .runtime import IMAGE_FILE, META_FILE, TEXT_FILE


class _ImageEncoder(nn.Module):
    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


class _TextEncoder(nn.Module):
    """Full-graph text tower: the runtime trims padding itself (the length axis is dynamic)."""

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.text = model.text

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens, trim_padding=False)


def _fp32_cpu(model: CLIP) -> CLIP:
    """``model`` itself if it is fp32 on the CPU, else an fp32 CPU copy (never in place)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(
        t.device.type == "cpu" and t.dtype == torch.float32
        for t in tensors
        if t.is_floating_point()
    ):
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32)


def export_onnx(model: CLIP, directory: str | Path, opset: int = 17) -> Path:
    """Write ``image_encoder.onnx``, ``text_encoder.onnx`` and ``clipforge_onnx.json``.

    Outputs are unnormalised features, exactly ``model.encode_image`` / ``encode_text``.
    The caller's model is left as it was: a half-precision or GPU model is exported from
    an fp32 CPU copy.
    """
    if model.visual is None or model.text is None:
        raise ValueError("ONNX export needs a model with both towers")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = _fp32_cpu(model)
    size = model.config.vision.image_size
    pixels = torch.zeros(2, 3, size, size)
    tokens = model.tokenize(["a photo of a cat", "a dog"])
    exports = [
        # wrappers in eval mode: the exporter restores each wrapper's mode (recursively)
        (_ImageEncoder(model).eval(), pixels, "pixels", {0: "batch"}, IMAGE_FILE),
        (_TextEncoder(model).eval(), tokens, "tokens", {0: "batch", 1: "length"}, TEXT_FILE),
    ]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about shape-dependent Python values
        for module, example, name, axes, filename in exports:
            torch.onnx.export(
                module,
                (example,),
                str(directory / filename),
                dynamo=False,
                input_names=[name],
                output_names=["features"],
                opset_version=opset,
                dynamic_axes={name: axes, "features": {0: "batch"}},
            )
    meta = {
        "embed_dim": model.config.embed_dim,
        "context_length": model.config.text.context_length,
        "eot_token_id": model.config.text.eot_token_id,
        "preprocess": model.preprocess_config.to_dict(),
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return directory
