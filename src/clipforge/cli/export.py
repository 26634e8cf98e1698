"""``clipforge export onnx``: write ONNX encoders for torch-free inference."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import ModelChoice, err_console, model_options

export_app = typer.Typer(help="Export models to other runtimes.", no_args_is_help=True)


@export_app.command("onnx")
@model_options(device=False, precision=False)
def onnx(
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write."),
    opset: int = typer.Option(17, help="ONNX opset."),
    tokens: bool = typer.Option(
        False, "--tokens", help="Also output each encoder's last-layer token features."
    ),
    *,
    choice: ModelChoice,
) -> None:
    """Export the image and text encoders (dynamic batch) plus preprocessing metadata and the
    model's own tokenizer (any family: CLIP, SigLIP, EVA)."""
    from clipforge.onnx.export import export_onnx

    export_onnx(choice.load(), output, opset=opset, tokens=tokens)
    files = ", ".join(sorted(p.name for p in output.iterdir() if p.is_file()))
    err_console.print(f"wrote {output}/: {files}")
    err_console.print("use it without torch: clipforge.onnx.OnnxClip(directory)")


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
