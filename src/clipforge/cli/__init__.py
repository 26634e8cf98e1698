"""The ``clipforge`` command line: a thin layer over the Python API."""

from __future__ import annotations

import typer

from .demo import register as _register_demo
from .export import register as _register_export
from .inference import register as _register_inference
from .search import register as _register_search
from .train import register as _register_train
from .zoo import register as _register_zoo

app = typer.Typer(
    name="clipforge",
    help="CLIP models, checkpoints and tools. Every command has --help.",
    no_args_is_help=True,
    add_completion=False,
)
_register_demo(app)
_register_zoo(app)
_register_inference(app)
_register_export(app)
_register_train(app)
_register_search(app)


def main() -> None:
    """Entry point of the ``clipforge`` script."""
    app()


__all__ = ["app", "main"]
