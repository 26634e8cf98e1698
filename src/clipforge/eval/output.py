"""``EvalOutput``: what a detailed evaluator returns (metrics plus what reports draw)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvalOutput"]


@dataclass
class EvalOutput:
    """Metrics of one evaluation and the material behind them.

    Attributes:
        metrics: ``{name: float}``, as :func:`clipforge.eval.evaluate` returns them.
        counts: sample counts (``images``, ``evaluated``, ``failed``, ``texts``, ``classes``).
        failures: ``(input, reason)`` for every input that could not be read.
        details: arrays and lists for reports (confusion matrix, per-class recall, example
            retrievals, ...), JSON-serialisable after :func:`clipforge.eval.results.to_jsonable`.
    """

    metrics: dict[str, float]
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
