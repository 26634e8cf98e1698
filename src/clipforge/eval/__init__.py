"""Evaluation: the evaluator registry and its metrics (same definitions as CLIP_benchmark).

>>> from clipforge.eval import evaluate, list_evaluators
>>> evaluate("zeroshot_classification", model, data={"kind": "folder", "path": "val/"})  # doctest: +SKIP
"""

from .config import EvalConfig
from .metrics import classification_metrics
from .registry import (
    EVALUATORS,
    Evaluator,
    evaluate,
    evaluator_options,
    get_evaluator,
    list_evaluators,
    register_evaluator,
)
from .retrieval import retrieval_recall

__all__ = [
    "EVALUATORS",
    "EvalConfig",
    "Evaluator",
    "classification_metrics",
    "evaluate",
    "evaluator_options",
    "get_evaluator",
    "list_evaluators",
    "register_evaluator",
    "retrieval_recall",
]
