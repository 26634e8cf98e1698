"""Export a CLIP model's image and text encoders to ONNX (dynamic batch), for every family.

Each tower is traced through its :meth:`~clipforge.models.Tower.export_forward` and declares
in :meth:`~clipforge.models.Tower.input_spec` how a runtime must feed it (EOT pooling that
allows trimming, or last-token pooling over the full context); the model's own tokenizer
(CLIP's BPE or a checkpoint's SentencePiece ``tokenizer.json``) travels with the bundle.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import CLIP, Tower
from ..tokenizer.files import save_tokenizer
from .quantize import quantize_bundle
from .runtime import IMAGE_FILE, META_FILE, TEXT_FILE


class _Encoder(nn.Module):
    """One tower's exportable forward (see ``Tower.export_forward``)."""

    def __init__(self, tower: Tower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.tower.export_forward(inputs)


class _TokenEncoder(_Encoder):
    """Features and the last block's tokens after the final norm (prefix tokens first), both
    from one :meth:`~clipforge.models.Tower.forward_intermediates` pass."""

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tower.forward_intermediates(
            inputs, indices=1, normalize_intermediates=True, output_fmt="NLC",
            output_extra_tokens=True,
        )  # fmt: skip
        kind = "image" if "image_features" in out else "text"
        tokens = out[f"{kind}_intermediates"][0]
        prefix = out.get(f"{kind}_intermediates_prefix")
        if prefix is not None:
            tokens = torch.cat([prefix[0], tokens], dim=1)
        return out[f"{kind}_features"], tokens


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


def _inference_form(model: CLIP) -> CLIP:
    """``model`` with every tower in its folded inference form (FastViT's branches merged
    into single convolutions): a folded copy when some tower is not folded yet."""
    if not any(tower.can_reparameterize for tower in model.present_towers()):
        return model
    return copy.deepcopy(model).reparameterize()


def _save_tokenizer(model: CLIP, directory: Path) -> dict[str, Any] | None:
    """Write the model's tokenizer into the bundle; ``None`` (with a warning) when it has
    none that can travel (then the runtime takes token ids only)."""
    try:
        return save_tokenizer(model.get_tokenizer(), directory)
    except ValueError as err:
        warnings.warn(f"the ONNX export carries no tokenizer: {err}", stacklevel=3)
        return None


def export_onnx(
    model: CLIP,
    directory: str | Path,
    opset: int = 17,
    tokens: bool = False,
    *,
    quantize: str | None = None,
    calibration: str | Path | None = None,
    max_degradation: float | None = None,
) -> Path:
    """Write ``image_encoder.onnx``, ``text_encoder.onnx``, ``clipforge_onnx.json`` and the
    model's tokenizer files (SigLIP: ``tokenizer.json``).

    Outputs are unnormalised features, exactly ``model.encode_image`` / ``encode_text``.
    The caller's model is left as it was: a half-precision or GPU model is exported from
    an fp32 CPU copy. ``tokens=True`` adds a second output to each encoder, ``tokens``
    ``(N, L, width)``: the last block's tokens after the tower's final norm (class token
    first; a ResNet's last feature map flattened), from the same pass as the features.
    ``quantize``: ``"int8"`` (CPU) or ``"fp16"`` (GPU) encoders, measured against the fp32
    model on ``calibration`` (see :mod:`clipforge.onnx.quantize`; the report is recorded as
    ``quantization`` in ``clipforge_onnx.json`` and refused above ``max_degradation``).
    """
    if model.visual is None or model.text is None:
        raise ValueError("ONNX export needs a model with both towers")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = _inference_form(_fp32_cpu(model))
    size = model.config.vision.image_size
    pixels = torch.zeros(2, 3, size, size)
    context = model.config.text.context_length
    ids = torch.arange(2 * context).reshape(2, context) % model.config.text.vocab_size
    wrap = _TokenEncoder if tokens else _Encoder
    exports = [
        # wrappers in eval mode: the exporter restores each wrapper's mode (recursively)
        (wrap(model.tower("image")).eval(), pixels, "pixels", {0: "batch"}, IMAGE_FILE),
        (wrap(model.tower("text")).eval(), ids, "tokens", {0: "batch", 1: "length"}, TEXT_FILE),
    ]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about shape-dependent Python values
        for module, example, name, axes, filename in exports:
            outputs = {"features": {0: "batch"}}
            if tokens:
                outputs["token_features"] = {0: "batch", 1: "length"}
            torch.onnx.export(
                module,
                (example,),
                str(directory / filename),
                dynamo=False,
                input_names=[name],
                output_names=list(outputs),
                opset_version=opset,
                dynamic_axes={name: axes, **outputs},
            )
    meta = {
        "embed_dim": model.config.embed_dim,
        "context_length": context,
        "text_input": model.tower("text").input_spec(),
        "tokenizer": _save_tokenizer(model, directory),
        "preprocess": model.preprocess_config.to_dict(),
        "token_outputs": tokens,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if quantize is not None:
        report = quantize_bundle(directory, model, quantize, calibration=calibration,
                                 max_degradation=max_degradation)  # fmt: skip
        meta["quantization"] = report.to_dict()
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return directory
