"""Options and helpers shared by CLI commands."""

from __future__ import annotations

import difflib
import functools
import glob
import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text

from .errors import UsageError, warn

if TYPE_CHECKING:
    import torch

    from clipforge.models import CLIP
    from clipforge.runtime import Precision

_WIDE = 100_000  # piped output: never truncate or wrap a path
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _WIDE)
console = Console(width=None if sys.stdout.isatty() else _WIDE)

MODEL = typer.Option(
    "ViT-B-32", "--model", "-m", help="Architecture name, or a checkpoint file/directory."
)
WEIGHTS = typer.Option(None, "--weights", "-w", help="Checkpoint file for a named architecture.")
PRETRAINED = typer.Option(
    None, "--pretrained", "-p", help="Registered pretrained tag (downloaded once, then cached)."
)
DEVICE = typer.Option(
    None, "--device", "-d", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)."
)
PRECISION = typer.Option(
    "fp32",
    "--precision",
    help="fp32 | bf16 | fp16 (autocast; weights stay fp32) | int8 (CPU: int8 linear layers, "
    "measured against fp32) | auto (bf16 where the CPU computes it, else int8).",
)
CALIBRATION = typer.Option(
    None,
    "--calibration",
    help="int8: folder of images (and *.txt prompts) to measure against fp32 (default: a "
    "built-in set).",
)
MAX_DEGRADATION = typer.Option(
    None,
    "--max-degradation",
    min=0.0,
    help="int8: refuse the model when 1 - cosine vs fp32 exceeds this (e.g. 0.01).",
)
JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
WORKERS = typer.Option(2, "--workers", help="DataLoader workers decoding images.")
BATCH = typer.Option(32, "--batch-size", help="Images per batch.")


def resolve_architecture(name: str) -> str | None:
    """The architecture ``name`` denotes: a registered name (case-insensitive when
    unambiguous) or an architecture JSON file; ``None`` otherwise."""
    from clipforge.configs.registry import is_architecture_file, resolve_architecture_name

    return name if is_architecture_file(name) else resolve_architecture_name(name)


def _unknown_model(model: str) -> UsageError:
    import clipforge

    names = clipforge.list_architectures()
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(model.lower(), list(by_lower), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(by_lower[c] for c in close)}? " if close else ""
    return UsageError(
        f"--model {model}: unknown architecture and no such checkpoint file or directory; "
        f"{hint}(`clipforge models` lists the architectures)"
    )


def check_precision_option(precision: str) -> Precision:
    """``--precision`` checked and narrowed to :data:`~clipforge.runtime.Precision`."""
    from clipforge.runtime import check_precision

    try:
        return check_precision(precision)
    except ValueError as err:
        raise UsageError(f"--precision: {err}") from None


def check_runtime(device: str | None, precision: str) -> torch.device:
    """The ``--device`` as a torch device, after checking it and ``--precision``."""
    from clipforge.runtime import resolve_device

    check_precision_option(precision)
    try:
        return resolve_device(device)
    except ValueError as err:
        raise UsageError(f"--device: {err}") from None


def _check_model_args(model: str, weights: Path | None, pretrained: str | None) -> str | None:
    """Validate --model/--weights/--pretrained in CLI terms; the architecture name if any."""
    import clipforge

    arch = resolve_architecture(model)
    if arch is None and not Path(model).exists():
        raise _unknown_model(model)
    if weights is not None:
        if arch is None:
            raise UsageError(f"--weights needs an architecture name as --model, got {model}")
        if not weights.exists():
            raise UsageError(f"--weights {weights}: no such file")
    if pretrained is not None:
        if arch is None:
            raise UsageError(f"--pretrained needs an architecture name as --model, got {model}")
        tags = [tag for _, tag in clipforge.list_pretrained(arch)]
        if pretrained not in tags:
            known = ", ".join(tags) or "none"
            raise UsageError(
                f"--pretrained {pretrained}: not a tag of {arch} (known: {known}; "
                "`clipforge models --pretrained` lists them)"
            )
    return arch


def load_model(
    model: str,
    weights: Path | None,
    pretrained: str | None,
    device: str | None = None,
    precision: str = "fp32",
    calibration: Path | None = None,
    max_degradation: float | None = None,
) -> CLIP:
    """Load the model named on the command line; random weights get a loud warning.

    ``precision`` int8 (or auto resolved to it) gives the int8 copy, measured against fp32
    on ``calibration`` (its one-line report on stderr), refused above ``max_degradation``.
    """
    from clipforge.api import load_spec
    from clipforge.quantization import apply_precision, report_of

    target = check_runtime(device, precision)
    arch = _check_model_args(model, weights, pretrained)
    if weights is None and pretrained is None and arch is not None:
        warn(
            f"{arch} has random weights (seed 0; pass --weights or "
            "--pretrained for meaningful results)"
        )
    clip = load_spec(model, weights, pretrained).to(target)
    quantized = apply_precision(
        clip, precision, calibration=calibration, max_degradation=max_degradation
    )
    report = report_of(quantized)
    if report is not None:
        err_console.print(report.summary())
    elif calibration is not None or max_degradation is not None:
        warn("--calibration and --max-degradation apply to --precision int8 only")
    return quantized


def quantization_json(clip: object) -> dict[str, Any]:
    """``{"quantization": report}`` for an int8 model (for ``--json`` outputs), else ``{}``."""
    from clipforge.quantization import report_of

    report = report_of(clip)
    return {} if report is None else {"quantization": report.to_dict()}


def _expand_one(item: Path) -> list[str]:
    from clipforge.data.folder import IMAGE_EXTENSIONS, list_images  # pulls in torch

    if item.is_dir():
        found = list_images(item)
        if not found:
            warn(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {display(item)}")
        return found
    if not item.exists() and glob.has_magic(str(item)):
        found = sorted(glob.glob(str(item), recursive=True))
        if not found:
            warn(f"no files match {display(item)}")
        return found
    return [str(item)]


def expand_images(items: list[Path]) -> list[str]:
    """Files as given; directories expanded (recursively, sorted) to their image files;
    quoted glob patterns expanded. Warns for a folder or pattern that yields nothing."""
    return [path for item in items for path in _expand_one(item)]


def display(path: str | os.PathLike) -> str:
    """A path for printing: bytes that are not valid UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def cell(path: str | os.PathLike) -> Text:
    """A table cell holding a path verbatim (no rich markup, no truncation)."""
    return Text(display(path), overflow="fold")


def read_lines(path: Path, option: str = "--texts") -> list[str]:
    """Non-empty lines of a UTF-8 text file (split on newlines only, not U+2028 or \\f)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise UsageError(f"{option} {display(path)}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{option} {display(path)}: not UTF-8 text (invalid byte at offset {err.start}); "
            "save it as UTF-8"
        ) from None
    return [s for line in text.split("\n") if (s := line.strip())]


def report_failures(failures: list[tuple[str, str]]) -> None:
    """Print every failed input; exit code 1 if there were any (results are still written)."""
    for path, reason in failures:
        err_console.print(Text.assemble(("failed", "red"), f" {display(path)}: {reason}"))
    if failures:
        err_console.print(f"[red]{len(failures)} input(s) failed[/red]; all others were processed")
        raise typer.Exit(code=1)


def fail_if_empty(n_inputs: int) -> None:
    """Exit 1 (after the caller wrote its empty output) when there was nothing to process."""
    if n_inputs == 0:
        warn("no inputs to process; wrote an empty result")
        raise typer.Exit(code=1)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


@dataclass(frozen=True)
class ModelChoice:
    """What ``--model/--weights/--pretrained/--device/--precision`` chose, as one value."""

    model: str
    weights: Path | None = None
    pretrained: str | None = None
    device: str | None = None
    precision: str = "fp32"
    calibration: Path | None = None  # int8: what the accuracy check measures on
    max_degradation: float | None = None  # int8: refuse above this 1 - cosine

    def load(self) -> CLIP:
        """The chosen model on the chosen device (see :func:`load_model`)."""
        return load_model(self.model, self.weights, self.pretrained, self.device,
                          self.precision, self.calibration, self.max_degradation)  # fmt: skip

    @property
    def autocast(self) -> Precision:
        """``--precision`` checked and narrowed for the API's ``precision=`` arguments."""
        return check_precision_option(self.precision)


MODEL_OPTIONS: dict[str, tuple[Any, Any]] = {  # name -> (annotation, typer option)
    "model": (str, MODEL),
    "weights": (Path, WEIGHTS),
    "pretrained": (str, PRETRAINED),
    "device": (str, DEVICE),
    "precision": (str, PRECISION),
    "calibration": (Path, CALIBRATION),
    "max_degradation": (float, MAX_DEGRADATION),
}


def options_of(
    table: Mapping[str, tuple[Any, Any]], make: Callable[..., Any]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: a command's keyword-only ``choice`` parameter becomes one typer option per
    entry of ``table`` (name -> (annotation, option)), handed over as ``make(**values)``:
    a group of flags declared once instead of in every command's signature."""

    def wrap(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        kept = [p for p in signature.parameters.values() if p.name != "choice"]
        added = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=option,
                              annotation=annotation)
            for n, (annotation, option) in table.items()
        ]  # fmt: skip

        @functools.wraps(command)
        def run(**kwargs: Any) -> None:
            chosen = {n: kwargs.pop(n) for n in table}
            command(choice=make(**chosen), **kwargs)

        run.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in [*kept, *added]}
        return run

    return wrap


def model_options(
    *, device: bool = True, precision: bool = True
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: a command's keyword-only ``choice: ModelChoice`` parameter becomes the model
    flags ``--model --weights --pretrained`` (plus ``--device`` and ``--precision
    --calibration --max-degradation`` unless turned off), declared once here instead of in
    every command's signature."""
    off = {"device"} if not device else set()
    if not precision:
        off |= {"precision", "calibration", "max_degradation"}
    table = {n: option for n, option in MODEL_OPTIONS.items() if n not in off}
    return options_of(table, ModelChoice)
