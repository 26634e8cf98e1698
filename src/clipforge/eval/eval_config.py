"""``EvalConfig``: one entry of a training config's ``eval`` list.

``{name: zeroshot_classification, data: {kind: folder, path: val/}, options: {...}}``: the
evaluator name (did-you-mean if unknown), the dataset it reads (a
:class:`~clipforge.data.data_config.DataConfig`, checked against the evaluator's data kinds), its
options (checked against the evaluator's options dataclass) and an optional ``label``, the
metric-key prefix (default: the name). All of it is checked when the config is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..configs import ConfigError
from ..configs.engine import Coerce, check_keys
from ..data.data_config import DataConfig
from .registry import as_data_config, evaluator_options, get_evaluator

__all__ = ["EvalConfig", "check_eval_list"]


@dataclass
class EvalConfig:
    """An evaluation to run every ``eval_every`` steps (see the module docstring)."""

    name: str
    data: DataConfig | None = None
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # metric keys are "<label or name>/<metric>"

    def __post_init__(self) -> None:

        evaluator = get_evaluator(self.name)
        self.data = as_data_config(self.data)
        evaluator.check_data(self.data, "eval.data")
        if not isinstance(self.options, dict):
            raise ConfigError(f"evaluator {self.name!r}: options must be a mapping")
        check_keys(evaluator.options_class, self.options, "eval.options", f"{self.name} option")

    @property
    def prefix(self) -> str:
        """The metric-key prefix: ``label`` or the evaluator name."""
        return self.label or self.name

    def coerce_options(self, coerce: Coerce, prefix: str) -> None:
        """Convert the options (and the dataset's) to their declared types, in place."""

        typed = evaluator_options(self.name, self.options, coerce, f"{prefix}.options")
        self.options = {key: getattr(typed, key) for key in self.options}
        if self.data is not None:
            self.data.coerce_options(coerce, f"{prefix}.data")


def check_eval_list(evals: Sequence[EvalConfig] | None) -> None:
    """A :class:`ConfigError` if two entries would log under the same metric prefix."""
    prefixes = [e.prefix for e in evals or ()]
    duplicates = sorted({p for p in prefixes if prefixes.count(p) > 1})
    if duplicates:
        raise ConfigError(f"eval: several entries named {duplicates}; give each a distinct 'label'")
