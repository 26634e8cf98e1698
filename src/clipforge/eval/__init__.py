"""Evaluation: the evaluator registry and its metrics (same definitions as CLIP_benchmark).

>>> from clipforge.eval import evaluate, list_evaluators
>>> evaluate("zeroshot_classification", model, data={"kind": "folder", "path": "val/"})  # doctest: +SKIP

:func:`evaluate_detailed` returns an :class:`EvalOutput` (metrics, counts, failures, report
material); :mod:`.results` writes CLIP_benchmark-shaped JSON and tables, :mod:`.report`
the HTML report, :mod:`.datasets` reads evaluation datasets from disk.
"""

from .eval_config import EvalConfig
from .metrics import classification_metrics
from .output import EvalOutput
from .rank_metrics import retrieval_recall
from .registry import (
    EVALUATORS,
    Evaluator,
    evaluate,
    evaluate_detailed,
    evaluator_options,
    get_evaluator,
    list_evaluators,
    register_evaluator,
)
from .run import EvaluationPlan, plan_evaluation, run_evaluation

__all__ = [
    "EVALUATORS",
    "EvalConfig",
    "EvalOutput",
    "EvaluationPlan",
    "Evaluator",
    "classification_metrics",
    "evaluate",
    "evaluate_detailed",
    "evaluator_options",
    "get_evaluator",
    "list_evaluators",
    "plan_evaluation",
    "register_evaluator",
    "retrieval_recall",
    "run_evaluation",
]
