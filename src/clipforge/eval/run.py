"""One evaluation run, end to end: options and dataset checked before the model is loaded,
then the evaluator, then a results record (what ``clipforge eval TASK`` does)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..data.data_config import DataConfig
from ..quantization import report_of
from ..runtime import Precision
from .datasets import data_config_for, dataset_name
from .output import EvalOutput
from .registry import evaluate_detailed, evaluator_options, get_evaluator
from .results import make_record

__all__ = ["EvaluationPlan", "plan_evaluation", "run_evaluation"]


@dataclass
class EvaluationPlan:
    """A checked evaluation: the evaluator, its options (a dict) and its dataset."""

    task: str
    options: dict[str, Any]
    data: DataConfig | None


def plan_evaluation(
    task: str,
    data: str | os.PathLike | None = None,
    options: dict[str, Any] | None = None,
    *,
    kind: str | None = None,
    data_options: dict[str, Any] | None = None,
    workers: int = 0,
    precision: Precision = "fp32",
) -> EvaluationPlan:
    """Check everything about a run that needs no model: the evaluator's name, its options
    and that it accepts the dataset (its kind guessed from the path when not given)."""
    evaluator = get_evaluator(task)
    options = dict(options or {})
    config = None if data is None else data_config_for(data, kind, data_options, workers)
    if precision != "fp32" and "precision" in {f.name for f in fields(evaluator.options_class)}:
        options.setdefault("precision", precision)
    evaluator_options(task, options)
    evaluator.check_data(config, "--data")
    return EvaluationPlan(task, options, config)


def run_evaluation(
    plan: EvaluationPlan,
    model: Any,
    *,
    model_name: str,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], EvalOutput]:
    """Run a planned evaluation on a loaded model: ``(results record, EvalOutput)``."""
    start = time.perf_counter()
    output = evaluate_detailed(plan.task, model, plan.options, plan.data)
    report = report_of(model)
    record = make_record(
        task=plan.task,
        dataset=dataset_name(plan.data),
        model=model_name,
        pretrained=pretrained,
        output=output,
        checkpoint=checkpoint or (model_name if Path(model_name).exists() else None),
        seconds=time.perf_counter() - start,
        options=plan.options,
        precision="int8" if report is not None else str(plan.options.get("precision", "fp32")),
        quantization=None if report is None else report.to_dict(),
    )
    return record, output
