"""Model-zoo commands: ``clipforge models`` and ``clipforge selfcheck``."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from .common import DEVICE, PRECISION, check_runtime, console, resolve_architecture
from .errors import UsageError


def models(
    pretrained: bool = typer.Option(False, "--pretrained", help="List pretrained tags too."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List architectures with their parameter counts (and pretrained tags)."""
    import clipforge

    from ..configs.param_counts import count_parameters, has_parameter_formula

    rows = []
    for name in clipforge.list_architectures():
        cfg = clipforge.get_config(name)
        # from the towers' formulas: no model built, no torch import (a third-party tower
        # without a formula is counted on the meta device)
        counts = count_parameters(cfg) if has_parameter_formula(cfg) else _exact_count(cfg)
        row = {
            "name": name,
            "image_size": cfg.vision.image_size,
            "embed_dim": cfg.embed_dim,
            **{f"{k}_params": v for k, v in counts.items()},
        }
        if pretrained:
            row["pretrained"] = [tag for _, tag in clipforge.list_pretrained(name)]
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="clipforge architectures")
    for column in ("name", "image", "embed", "image M", "text M", "total M"):
        table.add_column(column, justify="left" if column == "name" else "right")
    if pretrained:
        table.add_column("pretrained tags")
    for row in rows:
        cells = [
            row["name"],
            str(row["image_size"]),
            str(row["embed_dim"]),
            *(f"{row[k] / 1e6:.2f}" for k in ("image_params", "text_params", "total_params")),
        ]
        if pretrained:
            cells.append(", ".join(row["pretrained"]) or "-")
        table.add_row(*cells)
    console.print(table)


def selfcheck(
    architectures: list[str] = typer.Argument(None, help="Architectures to check (default: all)."),
    device: str = DEVICE,
    precision: str = PRECISION,
) -> None:
    """Build every architecture with random weights, run one image and one caption through it,
    and print parameter counts, embedding sizes and timings."""
    import clipforge
    from clipforge.runtime import resolve_precision
    from clipforge.selfcheck import check_architecture

    target = check_runtime(device, precision)
    int8 = resolve_precision(precision, target) == "int8"
    names: list[str] = []
    for name in architectures or clipforge.list_architectures():
        resolved = resolve_architecture(name)
        if resolved is None:
            raise UsageError(f"unknown architecture {name} (`clipforge models` lists them)")
        names.append(resolved)
    title = f"clipforge model-zoo self-check (random weights, {target}, {precision})"
    table = Table(title=title)
    for column in (
        "architecture",
        "image M",
        "text M",
        "total M",
        "embed",
        "cos(img,txt)",
        "build s",
        "image ms",
        "text ms",
        *(["int8 cos (worst)", "quantize s"] if int8 else []),
    ):
        table.add_column(column, justify="left" if column == "architecture" else "right")
    failures = 0
    with console.status("building models...") as status:
        for name in names:
            status.update(f"checking {name}...")
            try:
                table.add_row(name, *_row(check_architecture(name, target, precision)))
            except Exception as err:  # report and continue: a self-check lists every failure
                failures += 1
                table.add_row(name, f"[red]FAILED: {err}[/red]")
    console.print(table)
    if failures:
        raise typer.Exit(code=1)
    console.print(f"[green]all {len(names)} architectures built and ran[/green]")


def _row(check) -> list[str]:
    counts = check.parameters
    report = check.quantization
    measured = [] if report is None else [_worst_cosine(report), f"{check.quantize_seconds:.1f}"]
    return [
        *(f"{counts[k] / 1e6:.2f}" for k in ("image", "text", "total")),
        str(check.embed_dim),
        f"{check.cosine:+.3f}",
        f"{check.build_seconds:.1f}",
        f"{check.image_ms:.0f}",
        f"{check.text_ms:.0f}",
        *measured,
    ]


def _worst_cosine(report: dict[str, Any]) -> str:
    """The int8 model's worst cosine with fp32 over both towers' calibration items."""
    worst = [
        report[k] for k in ("image_cosine_min", "text_cosine_min") if report.get(k) is not None
    ]
    return f"{min(worst):.4f}" if worst else "-"


def register(app: typer.Typer) -> None:
    app.command()(models)
    app.command()(selfcheck)


def _exact_count(cfg: Any) -> dict[str, int]:
    from ..models import count_parameters  # imports torch: only for towers without a formula

    return count_parameters(cfg)
