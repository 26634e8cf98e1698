"""``clipforge explain IMG --text ... -o overlay.png``: where in an image each text matches."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import JSON, ModelChoice, display, err_console, model_options, print_json
from .writers import check_writable


@model_options(precision=False)
def explain(
    image: Path = typer.Argument(..., help="Image file."),
    texts: list[str] = typer.Option(..., "--text", "-t", help="A text (repeat the option)."),
    method: str = typer.Option(
        None,
        "--method",
        help="maskclip | clearclip | plain | gradcam (default: the measured best).",
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Overlay PNG (one text), or a pattern with {i} for several; e.g. overlay_{i}.png.",
    ),  # fmt: skip
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Heat-map opacity."),
    as_json: bool = JSON,
    *,
    choice: ModelChoice,
) -> None:
    """Heat maps of where each --text matches IMAGE, written as overlays."""
    from clipforge.dense import DEFAULT_METHOD, explain_to_files

    outputs = _outputs(output, len(texts))
    for path in outputs:
        check_writable(path, "--output")
    clip = choice.load()
    rows = explain_to_files(clip, image, texts, outputs, method or DEFAULT_METHOD, alpha)
    if as_json:
        print_json({"image": display(image), "method": method or DEFAULT_METHOD, "maps": rows})
    else:
        for row in rows:
            err_console.print(f"wrote {display(row['overlay'])} ({row['text']!r}, peak at "
                              f"x={row['peak'][0]}, y={row['peak'][1]})")  # fmt: skip


def _outputs(output: Path, n: int) -> list[Path]:
    if "{i}" in str(output):
        return [Path(str(output).replace("{i}", str(i))) for i in range(n)]
    if n > 1:
        raise typer.BadParameter("several --text need a pattern with {i}", param_hint="--output")
    return [output]


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command to ``app``."""
    app.command(name="explain")(explain)
