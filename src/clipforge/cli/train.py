"""``clipforge train CONFIG.yaml [KEY=VALUE ...]``: a thin layer over ``clipforge.train``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from .common import err_console


def train(
    config: Path = typer.Argument(..., help="Training config (YAML or JSON)."),
    overrides: list[str] = typer.Argument(
        None, help="Overrides such as optim.lr=1e-4 steps=100 resume=latest."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a previous run's files in a non-empty output_dir."
    ),
) -> None:
    """Train or fine-tune a CLIP model (see examples/train_procedural_tiny.yaml)."""
    from ..checkpoints import CheckpointError
    from ..train import (
        ConfigError,
        NonFiniteLossError,
        OutputDirError,
        load_config,
        train as run_training,
    )

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as err:
        err_console.print(f"[red]config error:[/red] {err}")
        raise typer.Exit(code=2) from None
    try:
        result = run_training(cfg, overwrite=overwrite)
    except OutputDirError as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from None
    except (NonFiniteLossError, CheckpointError) as err:
        err_console.print(f"[red]training stopped:[/red] {err}")
        raise typer.Exit(code=1) from None
    summary = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in result.metrics.items()
        if k != "event"
    )
    err_console.print(f"[green]done[/green] ({summary}); checkpoint: {result.last_checkpoint}")


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""
    app.command(name="train")(train)


def main(argv: list[str] | None = None) -> None:
    """Run only the ``train`` command (``python -m clipforge.cli.train CONFIG ...``)."""
    app = typer.Typer(add_completion=False)
    register(app)

    @app.callback()
    def _root() -> None:  # keeps "train" as an explicit sub-command
        pass

    app(args=["train", *(sys.argv[1:] if argv is None else argv)], prog_name="clipforge")


if __name__ == "__main__":
    main()
