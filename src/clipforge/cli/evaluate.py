"""``clipforge eval TASK --model ... --data ... -o results.json [--report report.html]``.

One command per registered evaluator, plus ``compare`` (models × datasets → one table) and
``build`` (merge results files into a table). The logic lives in :mod:`clipforge.eval`.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any

import typer

from .common import (
    BATCH,
    CALIBRATION,
    DEVICE,
    MAX_DEGRADATION,
    PRECISION,
    PRETRAINED,
    WEIGHTS,
    WORKERS,
    err_console,
    load_model,
)
from .errors import UsageError, warn
from .eval_flags import EvaluatorGroup, make_command

eval_app = typer.Typer(
    cls=EvaluatorGroup,
    help="Evaluate models: zero-shot, retrieval, linear probe, compositional probes.",
    no_args_is_help=True,
)

DATA = typer.Option(None, "--data", help="Dataset: class folder, table, MNIST dir or tar.")
KIND = typer.Option(None, "--data-kind", help="folder | csv | mnist | archive (default: guessed).")
DATA_OPTION = typer.Option(None, "--data-option", help="Data option KEY=VALUE (repeatable).")
OPTION = typer.Option(None, "--option", help="Evaluator option KEY=VALUE (repeatable).")
CLASSNAMES = typer.Option(
    None, "--classnames", help="cifar10 | cifar100 | imagenet1k | mnist | FILE."
)
TEMPLATES = typer.Option(None, "--templates", help="Template set name, file, or CuPL JSON file.")
LIMIT = typer.Option(None, "--limit", help="Evaluate an evenly spaced subset of N images.")


def check_writable(path: Path, option: str) -> None:
    """:func:`clipforge.cli.writers.check_writable`, imported when used (it pulls numpy)."""
    from .writers import check_writable as check

    check(path, option)


def _pairs(items: list[str] | None, option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value) if value[:1] in "[{" else value
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_task(task: str, model: str, data: Path | None, options: dict[str, Any], *,
             weights: Path | None = None, pretrained: str | None = None,
             device: str | None = None, precision: str = "fp32", kind: str | None = None,
             data_options: dict[str, Any] | None = None, workers: int = 0,
             calibration: Path | None = None,
             max_degradation: float | None = None) -> tuple[dict, Any]:  # fmt: skip
    """Plan (options and dataset checked), load the model, run: ``(record, EvalOutput)``."""
    from ..eval import plan_evaluation, run_evaluation
    from ..runtime import check_precision

    plan = plan_evaluation(
        task, data, options, kind=kind, data_options=data_options, workers=workers,
        precision=check_precision(precision),
    )  # fmt: skip
    clip = load_model(model, weights, pretrained, device, precision, calibration, max_degradation)
    return run_evaluation(plan, clip, model_name=model, pretrained=pretrained, checkpoint=weights)


def _print_metrics(record: dict[str, Any]) -> None:
    counts = ", ".join(f"{k}={v}" for k, v in record["counts"].items())
    err_console.print(f"[bold]{record['task']}[/bold] {record['dataset']} ({counts})")
    if record["failures"]:
        warn(f"{len(record['failures'])} unreadable input(s) excluded (listed in the results)")
    metrics = record["metrics"]
    for key, value in metrics.items():
        chance = metrics.get(key.replace("_acc", "_chance")) if key.endswith("_acc") else None
        extra = f"   (chance {chance:.3f})" if chance is not None else ""
        if not key.endswith("_chance"):
            err_console.print(f"  {key:32s} {value:.4f}{extra}")
    for language, group in (record.get("details") or {}).get("per_language", {}).items():
        counts = ", ".join(f"{k}={v}" for k, v in group["counts"].items())
        err_console.print(f"[bold]  language {language}[/bold] ({counts})")
        for key, value in group["metrics"].items():
            err_console.print(f"    {key:30s} {value:.4f}")


def _run_command(
    task: str,
    model: str = typer.Option(..., "--model", "-m", help="Architecture, or checkpoint."),
    data: Path = DATA,
    output: Path = typer.Option(Path("results.json"), "--output", "-o", help="Results JSON."),
    report: Path = typer.Option(None, "--report", help="Also write an HTML report."),
    run_dir: Path = typer.Option(None, "--run-dir", help="Report: add this run's curves."),
    weights: Path = WEIGHTS,
    pretrained: str = PRETRAINED,
    device: str = DEVICE,
    precision: str = PRECISION,
    calibration: Path = CALIBRATION,
    max_degradation: float = MAX_DEGRADATION,
    data_kind: str = KIND,
    data_option: list[str] = DATA_OPTION,
    option: list[str] = OPTION,
    batch_size: int = BATCH,
    workers: int = WORKERS,
    **flags: Any,
) -> None:
    """Run one evaluator (its own flags come from its options dataclass) and write results."""
    options = _pairs(option, "--option")
    data_options = _pairs(data_option, "--data-option")
    for name, value in flags.items():  # a second dataset (``--test-data``) is a path
        options[name] = _data_dict(value, data_kind, data_options) if name.endswith("_data") else value
    if batch_size != 32 and task != "image_caption_selection":
        options["batch_size"] = batch_size
    check_writable(output, "--output")
    if report is not None:
        check_writable(report, "--report")
    record, result = run_task(
        task, model, data, options, weights=weights, pretrained=pretrained, device=device,
        precision=precision, kind=data_kind, data_options=data_options, workers=workers,
        calibration=calibration, max_degradation=max_degradation,
    )  # fmt: skip
    output.write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    _print_metrics(record)
    if report is not None:
        from ..eval.report import write_report

        write_report([(record, result)], report, run_dir)
    err_console.print(f"wrote {output}" + (f" and {report}" if report else ""))


def _data_dict(path: Path, kind: str | None, options: dict[str, Any]) -> dict[str, Any]:
    return {"kind": _guess(path, kind), "path": str(path), "options": options}


def _task_command(task: str) -> Any:
    """The typer command of evaluator ``task``, with a flag per field of its options."""
    from ..eval import get_evaluator

    evaluator = get_evaluator(task)
    base = functools.partial(_run_command, task)
    base.__signature__ = inspect.signature(_run_command).replace(  # type: ignore[attr-defined]
        parameters=list(inspect.signature(_run_command).parameters.values())[1:]
    )
    doc = f"Run the {task} evaluator and write its results JSON. {evaluator.description}"
    return make_command(base, evaluator.options_class, doc.strip())


def _guess(path: Path, kind: str | None) -> str:
    from ..eval.datasets import guess_kind

    return kind or guess_kind(path)


def build(
    files: list[Path] = typer.Argument(..., help="Results JSON files."),
    output: Path = typer.Option(..., "--output", "-o", help="Table: .csv, .md or .json."),
) -> None:
    """Merge results files into one table (one row per run)."""
    from ..eval.results import merge, write_table

    check_writable(output, "--output")
    text = write_table(merge(files), output)
    typer.echo(text if output.suffix == ".md" else f"wrote {output}")


def compare(
    task: str = typer.Option(..., "--task", "-t", help="Evaluator name."),
    models: list[str] = typer.Option(..., "--model", "-m", help="Model (repeatable)."),
    datasets: list[Path] = typer.Option(None, "--data", help="Dataset (repeatable)."),
    output: Path = typer.Option(..., "--output", "-o", help="Table: .csv, .md or .json."),
    results_dir: Path = typer.Option(None, "--results-dir", help="Keep each run's JSON here."),
    option: list[str] = OPTION,
    classnames: str = CLASSNAMES,
    limit: int = LIMIT,
    device: str = DEVICE,
    precisions: list[str] = typer.Option(
        ["fp32"], "--precision", help="Precision (repeatable: fp32, int8, ... side by side)."
    ),
    calibration: Path = CALIBRATION,
    max_degradation: float = MAX_DEGRADATION,
) -> None:
    """Evaluate several models (architectures or checkpoints) on several datasets, at one
    or more precisions (``--precision fp32 --precision int8``: rows side by side)."""
    from ..eval.results import write_table

    check_writable(output, "--output")
    options = _pairs(option, "--option")
    options.update({k: v for k, v in {"classnames": classnames, "limit": limit}.items() if v})
    records = []
    runs = [(m, d, p) for m in models for d in datasets or [None] for p in precisions]
    for model, data, precision in runs:
        record, _ = run_task(task, model, data, dict(options), device=device,
                             precision=precision, calibration=calibration,
                             max_degradation=max_degradation)  # fmt: skip
        records.append(record)
        if results_dir is not None:
            results_dir.mkdir(parents=True, exist_ok=True)
            suffix = "" if len(precisions) == 1 else f"-{precision}"
            name = f"{Path(model).stem}-{record['dataset']}-{task}{suffix}.json"
            (results_dir / name).write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    text = write_table(records, output)
    typer.echo(text if output.suffix == ".md" else f"wrote {output}")


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command group to ``app`` (one command per registered evaluator)."""
    EvaluatorGroup.make_task_command = staticmethod(_task_command)
    eval_app.command(name="compare")(compare)
    eval_app.command(name="build")(build)
    app.add_typer(eval_app, name="eval")
