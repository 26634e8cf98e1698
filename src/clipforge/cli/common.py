"""Options and helpers shared by CLI commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

MODEL = typer.Option(
    "ViT-B-32", "--model", "-m", help="Architecture name, or a checkpoint file/directory."
)
WEIGHTS = typer.Option(None, "--weights", "-w", help="Checkpoint file for a named architecture.")
PRETRAINED = typer.Option(
    None, "--pretrained", "-p", help="Registered pretrained tag (downloaded once, then cached)."
)
JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
WORKERS = typer.Option(2, "--workers", help="DataLoader workers decoding images.")
BATCH = typer.Option(32, "--batch-size", help="Images per batch.")


def load_model(model: str, weights: Path | None, pretrained: str | None):
    """Load the model named on the command line; random weights get a loud warning."""
    import torch

    import clipforge
    from clipforge.configs import is_architecture

    if weights is None and pretrained is None and is_architecture(model):
        err_console.print(
            f"[yellow]warning: {model} has random weights (seed 0; pass --weights or "
            "--pretrained for meaningful results)[/yellow]"
        )
        torch.manual_seed(0)  # the same random model on every invocation
        return clipforge.create_model(model).eval()
    return clipforge.load(model, weights=weights, pretrained=pretrained)


def expand_images(items: list[Path]) -> list[str]:
    """Files as given; directories expanded (recursively, sorted) to their image files."""
    from clipforge.data.folder import list_images  # imported here: it pulls in torch

    paths: list[str] = []
    for item in items:
        paths += list_images(item) if item.is_dir() else [str(item)]
    return paths


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a text file."""
    try:
        return [
            line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    except OSError as err:
        raise typer.BadParameter(f"cannot read {path}: {err}") from err


def report_failures(failures: list[tuple[str, str]]) -> None:
    """Print every failed input; exit code 1 if there were any (results are still written)."""
    for path, reason in failures:
        err_console.print(f"[red]failed[/red] {path}: {reason}")
    if failures:
        err_console.print(f"[red]{len(failures)} input(s) failed[/red]; all others were processed")
        raise typer.Exit(code=1)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))
