"""The ``caption`` command: image captions from a CoCa model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import (
    BATCH,
    JSON,
    ModelChoice,
    cell,
    console,
    display,
    expand_images,
    fail_if_empty,
    model_options,
    print_json,
    report_failures,
)

GENERATION_TYPES = ("beam_search", "top_p", "top_k")


@model_options(precision=False)
def caption(
    images: list[Path] = typer.Argument(..., help="Image files, directories or quoted globs."),
    generation_type: str = typer.Option(
        "beam_search", "--generation-type", help="beam_search | top_p | top_k"
    ),
    beams: int = typer.Option(6, "--beams", min=2, help="Beams (beam_search)."),
    beam_groups: int = typer.Option(3, "--beam-groups", min=1, help="Beam groups (beam_search)."),
    top_p: float = typer.Option(0.1, "--top-p", min=0.0, max=1.0),
    top_k: int = typer.Option(1, "--top-k", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    seq_len: int = typer.Option(30, "--seq-len", min=2, help="Longest caption, in tokens."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (top_p / top_k)."),
    batch_size: int = BATCH,
    as_json: bool = JSON,
    *,
    choice: ModelChoice,
) -> None:
    """Caption images with a CoCa model (e.g. -m coca_ViT-B-32 --pretrained mscoco_finetuned_laion2b_s13b_b90k)."""
    import torch

    from clipforge.captioning import caption as caption_images

    if generation_type not in GENERATION_TYPES:
        raise typer.BadParameter(f"one of {', '.join(GENERATION_TYPES)}", param_hint="--generation-type")
    paths = expand_images(images)
    model = choice.load()
    torch.manual_seed(seed)
    result = caption_images(
        model, paths, batch_size=batch_size, generation_type=generation_type, num_beams=beams,
        num_beam_groups=beam_groups, top_p=top_p, top_k=top_k, temperature=temperature,
        seq_len=seq_len,
    )  # fmt: skip
    if as_json:
        print_json({
            "captions": [{"path": display(p), "caption": c} for p, c in result.captions],
            "failures": [[display(p), reason] for p, reason in result.failures],
        })  # fmt: skip
    else:
        table = Table("image", "caption")
        for path, text in result.captions:
            table.add_row(cell(path), text)
        console.print(table)
    report_failures(result.failures)
    fail_if_empty(len(paths))


def register(app: typer.Typer) -> None:
    app.command()(caption)
