"""``clipforge eval TASK --model ... --data ... -o results.json [--report report.html]``.

One command per registered evaluator, plus ``compare`` (models × datasets → one table) and
``build`` (merge results files into a table). The logic lives in :mod:`clipforge.eval`.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from .common import BATCH, DEVICE, PRECISION, PRETRAINED, WEIGHTS, WORKERS, err_console, load_model
from .errors import UsageError, warn

eval_app = typer.Typer(
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
             data_options: dict[str, Any] | None = None, workers: int = 0) -> tuple[dict, Any]:  # fmt: skip
    """Run one evaluation; ``(results record, EvalOutput)``."""
    from ..eval import get_evaluator
    from ..eval.datasets import data_config_for, dataset_name
    from ..eval.registry import evaluate_detailed, evaluator_options
    from ..eval.results import make_record

    evaluator = get_evaluator(task)
    config = None
    if data is not None:
        config = data_config_for(data, kind, data_options, workers)
    if precision != "fp32" and "precision" in {f.name for f in fields(evaluator.options_class)}:
        options.setdefault("precision", precision)
    evaluator_options(task, options)  # option errors before the model is loaded
    evaluator.check_data(config, "--data")
    clip = load_model(model, weights, pretrained, device, precision)
    start = time.perf_counter()
    output = evaluate_detailed(task, clip, options, config)
    seconds = time.perf_counter() - start
    record = make_record(
        task=task,
        dataset=dataset_name(config),
        model=model,
        pretrained=pretrained,
        output=output,
        checkpoint=weights or (model if Path(model).exists() else None),
        seconds=seconds,
        options=options,
    )
    return record, output


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


def _task_command(task: str) -> Any:
    def command(
        model: str = typer.Option(..., "--model", "-m", help="Architecture, or checkpoint."),
        data: Path = DATA,
        output: Path = typer.Option(Path("results.json"), "--output", "-o", help="Results JSON."),
        report: Path = typer.Option(None, "--report", help="Also write an HTML report."),
        run_dir: Path = typer.Option(None, "--run-dir", help="Report: add this run's curves."),
        weights: Path = WEIGHTS,
        pretrained: str = PRETRAINED,
        device: str = DEVICE,
        precision: str = PRECISION,
        data_kind: str = KIND,
        data_option: list[str] = DATA_OPTION,
        option: list[str] = OPTION,
        classnames: str = CLASSNAMES,
        templates: str = TEMPLATES,
        limit: int = LIMIT,
        test_data: Path = typer.Option(None, "--test-data", help="linear_probe: test set."),
        fewshot_k: int = typer.Option(None, "--fewshot-k", help="linear_probe: k per class."),
        probe: str = typer.Option(None, "--probe", help="linear_probe: linear | logreg."),
        batch_size: int = BATCH,
        workers: int = WORKERS,
    ) -> None:
        options = _pairs(option, "--option")
        given = {"classnames": classnames, "templates": templates, "limit": limit,
                 "fewshot_k": fewshot_k, "probe": probe}  # fmt: skip
        options.update({k: v for k, v in given.items() if v is not None})
        if test_data is not None:
            options["test_data"] = {"kind": _guess(test_data, data_kind), "path": str(test_data),
                                    "options": _pairs(data_option, "--data-option")}  # fmt: skip
        if batch_size != 32 and task != "image_caption_selection":
            options["batch_size"] = batch_size
        check_writable(output, "--output")
        if report is not None:
            check_writable(report, "--report")
        record, result = run_task(
            task, model, data, options, weights=weights, pretrained=pretrained, device=device,
            precision=precision, kind=data_kind, data_options=_pairs(data_option, "--data-option"),
            workers=workers,
        )  # fmt: skip
        output.write_text(json.dumps(record, indent=2) + "\n", "utf-8")
        _print_metrics(record)
        if report is not None:
            from ..eval.report import write_report

            write_report([(record, result)], report, run_dir)
        err_console.print(f"wrote {output}" + (f" and {report}" if report else ""))

    command.__doc__ = f"Run the {task} evaluator and write its results JSON."
    return command


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
    precision: str = PRECISION,
) -> None:
    """Evaluate several models (architectures or checkpoints) on several datasets."""
    from ..eval.results import write_table

    check_writable(output, "--output")
    options = _pairs(option, "--option")
    options.update({k: v for k, v in {"classnames": classnames, "limit": limit}.items() if v})
    records = []
    for model in models:
        for data in datasets or [None]:
            record, _ = run_task(task, model, data, dict(options), device=device,
                                 precision=precision)  # fmt: skip
            records.append(record)
            if results_dir is not None:
                results_dir.mkdir(parents=True, exist_ok=True)
                name = f"{Path(model).stem}-{record['dataset']}-{task}.json"
                (results_dir / name).write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    text = write_table(records, output)
    typer.echo(text if output.suffix == ".md" else f"wrote {output}")


#: The built-in evaluators (named here so that importing the CLI imports no torch/numpy;
#: a test checks it against ``clipforge.eval.list_evaluators()``).
TASKS = (
    "zeroshot_classification",
    "zeroshot_retrieval",
    "linear_probe",
    "image_caption_selection",
    "procedural_zeroshot",
)


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command group to ``app``."""
    for task in TASKS:
        eval_app.command(name=task)(_task_command(task))
    eval_app.command(name="compare")(compare)
    eval_app.command(name="build")(build)
    app.add_typer(eval_app, name="eval")
