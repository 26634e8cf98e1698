"""The ``clipforge`` command line: a thin layer over the Python API."""

from __future__ import annotations

import typer

from .caption import register as _register_caption
from .demo import register as _register_demo
from .errors import friendly_errors, set_debug
from .evaluate import register as _register_eval
from .explain import register as _register_explain
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
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar="CLIPFORGE_DEBUG",
        help="Show full tracebacks instead of one-line errors (or set CLIPFORGE_DEBUG=1).",
    ),
) -> None:
    set_debug(debug)


_register_demo(app)
_register_zoo(app)
_register_inference(app)
_register_export(app)
_register_train(app)
_register_search(app)
_register_eval(app)
_register_explain(app)
_register_caption(app)


def _wrap_commands(typer_app: typer.Typer) -> None:
    """Every command prints ordinary mistakes as one line (see :mod:`.errors`)."""
    for info in typer_app.registered_commands:
        if info.callback is not None:
            info.callback = friendly_errors(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _wrap_commands(group.typer_instance)


_wrap_commands(app)


click_app = typer.main.get_command(app)
"""The CLI as a click command (for mkdocs-click's generated reference); built without running it."""


def main() -> None:
    """Entry point of the ``clipforge`` script."""
    app()


__all__ = ["app", "click_app", "main"]
