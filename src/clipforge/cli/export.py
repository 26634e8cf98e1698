"""``clipforge export onnx``: write ONNX encoders for torch-free inference."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import CALIBRATION, MAX_DEGRADATION, ModelChoice, err_console, model_options

export_app = typer.Typer(help="Export models to other runtimes.", no_args_is_help=True)


@export_app.command("onnx")
@model_options(device=False, precision=False)
def onnx(
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write."),
    opset: int = typer.Option(17, help="ONNX opset."),
    tokens: bool = typer.Option(
        False, "--tokens", help="Also output each encoder's last-layer token features."
    ),
    quantize: str = typer.Option(
        None, "--quantize", help="int8 (CPU, onnxruntime dynamic) | fp16 (GPU) encoders."
    ),
    calibration: Path = CALIBRATION,
    max_degradation: float = MAX_DEGRADATION,
    *,
    choice: ModelChoice,
) -> None:
    """Export the image and text encoders (dynamic batch) plus preprocessing metadata and the
    model's own tokenizer (any family: CLIP, SigLIP, EVA)."""
    from clipforge.onnx.export import export_onnx
    from clipforge.onnx.quantize import QUANTIZATIONS

    if quantize is not None and quantize not in QUANTIZATIONS:
        raise typer.BadParameter(f"choose one of {', '.join(QUANTIZATIONS)}", param_hint="--quantize")
    export_onnx(choice.load(), output, opset=opset, tokens=tokens, quantize=quantize,
                calibration=calibration, max_degradation=max_degradation)  # fmt: skip
    files = ", ".join(sorted(p.name for p in output.iterdir() if p.is_file()))
    err_console.print(f"wrote {output}/: {files}")
    if quantize is not None:
        from clipforge.onnx import OnnxClip

        quantization = OnnxClip(output).quantization or {}
        err_console.print(f"{quantize}: image cosine {quantization.get('image_cosine')}, text "
                          f"cosine {quantization.get('text_cosine')} vs fp32")  # fmt: skip
    err_console.print("use it without torch: clipforge.onnx.OnnxClip(directory)")


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
