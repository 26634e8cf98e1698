"""The evaluator registry: name → (typed options dataclass, function, accepted data kinds).

An evaluator is a function ``run(model, data, options) -> dict[str, float]``: ``data`` is a
:class:`~clipforge.data.data_config.DataConfig` describing the dataset (kind + path + options,
or ``None`` for evaluators that need none) and ``options`` an instance of its options
dataclass. :func:`evaluate` runs one by name; training's ``eval_every``, the demo and
``clipforge eval`` all go through it. Built-in evaluators are ``"module:attribute"``
references imported on first use; :func:`register_evaluator` adds more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..configs import ConfigError
from ..configs.engine import Coerce, build
from ..data.data_config import DataConfig
from ..data.sources import DATA_SOURCES, get_data_source
from ..embedding import eval_mode
from ..registry import Registry, import_ref
from .output import EvalOutput

__all__ = [
    "EVALUATORS",
    "Evaluator",
    "as_data_config",
    "evaluate",
    "evaluate_detailed",
    "evaluator_options",
    "get_evaluator",
    "list_evaluators",
    "register_evaluator",
]

Metrics = dict[str, float]


@dataclass(frozen=True)
class Evaluator:
    """One registered evaluator.

    Attributes:
        name: the registry name.
        options: its options dataclass (or ``"module:Class"``).
        run: ``run(model, data, options) -> metrics`` (or ``"module:function"``).
        reads: what it reads from its dataset: ``"labelled_images"``, ``"captions"``, or
            ``None`` (it takes no dataset). Any registered data source that yields it is
            accepted (:attr:`clipforge.data.sources.DataSource.yields`).
        data_kinds: optionally, the only data kinds it accepts.
        description: one line for listings.
        details: optional ``details(model, data, options) -> EvalOutput`` (or
            ``"module:function"``): the metrics plus counts, failures and report material;
            ``clipforge eval`` uses it when present.
    """

    name: str
    options: type | str
    run: Callable[[Any, DataConfig | None, Any], Metrics] | str
    data_kinds: tuple[str, ...] = ()
    description: str = ""
    details: Callable[[Any, DataConfig | None, Any], Any] | str | None = None
    reads: str | None = None

    @property
    def options_class(self) -> type:
        """The options dataclass (imported on first use)."""
        cls = import_ref(self.options)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"evaluator {self.name!r}: options {cls!r} is not a dataclass")
        return cls

    def check_data(self, data: DataConfig | None, prefix: str = "data") -> None:
        """A :class:`ConfigError` unless ``data`` is a dataset this evaluator accepts."""
        if self.reads is None and not self.data_kinds:
            if data is not None:
                raise ConfigError(f"evaluator {self.name!r} takes no dataset; remove '{prefix}'")
            return
        wanted = self.reads or f"kind {' or '.join(self.data_kinds)}"
        if data is None:
            raise ConfigError(f"evaluator {self.name!r} needs '{prefix}' (a dataset of {wanted})")
        if self.data_kinds and data.kind not in self.data_kinds:
            raise ConfigError(
                f"evaluator {self.name!r} cannot use data of kind {data.kind!r} ('{prefix}.kind'); "
                f"it accepts {list(self.data_kinds)}"
            )
        if self.reads and self.reads not in get_data_source(data.kind).yields:
            able = [n for n, s in DATA_SOURCES.items() if self.reads in s.yields]
            raise ConfigError(
                f"evaluator {self.name!r} cannot use data of kind {data.kind!r} ('{prefix}.kind'):"
                f" it reads {self.reads.replace('_', ' ')}, which that kind does not yield "
                f"(kinds that do: {', '.join(able)})"
            )


#: evaluator name -> its :class:`Evaluator`
EVALUATORS: Registry[Evaluator] = Registry("evaluator")


def register_evaluator(
    name: str,
    options: type | str,
    run: Callable[..., Metrics] | str,
    *,
    data_kinds: tuple[str, ...] | list[str] = (),
    description: str = "",
    details: Callable[..., Any] | str | None = None,
    reads: str | None = None,
    replace: bool = False,
) -> Evaluator:
    """Register evaluator ``name``; ``replace=True`` overrides an existing one.

    ``reads`` (``"labelled_images"`` or ``"captions"``) lets it use any data source that
    yields that; ``data_kinds`` restricts it to some kinds."""
    if reads not in (None, "labelled_images", "captions"):
        raise ConfigError(f"reads must be 'labelled_images', 'captions' or None, got {reads!r}")
    evaluator = Evaluator(name, options, run, tuple(data_kinds), description, details, reads)
    return EVALUATORS.register(name, evaluator, replace=replace)


def list_evaluators() -> list[str]:
    """The registered evaluator names, sorted."""
    return sorted(EVALUATORS.names())


def get_evaluator(name: str) -> Evaluator:
    """The evaluator ``name``; a did-you-mean :class:`ConfigError` if unknown."""
    return EVALUATORS.get(name)


def evaluator_options(
    name: str, options: Any, coerce: Coerce | None = None, prefix: str = "options"
) -> Any:
    """The typed options of evaluator ``name`` from a dict (unknown keys: did-you-mean)."""
    return build(get_evaluator(name).options_class, options, prefix, coerce, "option")


def as_data_config(data: DataConfig | Mapping[str, Any] | None) -> DataConfig | None:
    """``data`` as a :class:`DataConfig` (a dict is checked like a config section)."""
    if data is None or isinstance(data, DataConfig):
        return data
    return build(DataConfig, data, "data", what="option")


def _prepare(
    name: str, options: Any, data: DataConfig | Mapping[str, Any] | None
) -> tuple[Evaluator, Any, DataConfig | None]:
    """The evaluator, its typed options and its checked dataset (before any model work)."""
    evaluator = get_evaluator(name)
    opts = evaluator_options(name, options)
    config = as_data_config(data)
    evaluator.check_data(config)
    return evaluator, opts, config


def evaluate(
    name: str,
    model: Any,
    options: Any = None,
    data: DataConfig | Mapping[str, Any] | None = None,
) -> Metrics:
    """Run evaluator ``name`` on ``model``: metrics as ``{metric: float}``.

    ``options``: a dict or the evaluator's options dataclass; ``data``: a
    :class:`DataConfig` or dict (``{"kind": "folder", "path": ...}``). Everything is
    validated before the model is touched; the model's train/eval flags are restored.
    """
    evaluator, opts, config = _prepare(name, options, data)
    with eval_mode(model):
        metrics = import_ref(evaluator.run)(model, config, opts)
    return {str(k): float(v) for k, v in metrics.items()}


def evaluate_detailed(
    name: str,
    model: Any,
    options: Any = None,
    data: DataConfig | Mapping[str, Any] | None = None,
) -> EvalOutput:
    """Like :func:`evaluate`, but an :class:`~clipforge.eval.output.EvalOutput` (metrics,
    counts, failures, report material); evaluators without ``details`` give metrics only."""
    evaluator, opts, config = _prepare(name, options, data)
    with eval_mode(model):
        result = import_ref(evaluator.details or evaluator.run)(model, config, opts)
    if not isinstance(result, EvalOutput):
        result = EvalOutput(metrics=dict(result))
    result.metrics = {str(k): float(v) for k, v in result.metrics.items()}
    return result


for _name, _module, _reads, _description, _detailed in (
    (
        "zeroshot_classification",
        "clipforge.eval.zeroshot_classification",
        "labelled_images",
        "acc1, acc5, mean per-class recall (+ confusion matrix) on labelled images",
        True,
    ),
    (
        "zeroshot_retrieval",
        "clipforge.eval.zeroshot_retrieval",
        "captions",
        "image↔text recall@K, mean/median rank on a filepath,caption table (chunked)",
        True,
    ),
    (
        "linear_probe",
        "clipforge.eval.linear_probe",
        "labelled_images",
        "linear probe on frozen image features (CLIP_benchmark protocol, few-shot, logreg)",
        True,
    ),
    (
        "image_caption_selection",
        "clipforge.eval.image_caption_selection",
        None,
        "pick the true caption among hard negatives: binding, counting, spatial probes",
        True,
    ),
    (
        "procedural_zeroshot",
        "clipforge.eval.procedural_zeroshot",
        None,
        "colour+shape zero-shot accuracy on held-out (test) and seen (val) procedural pairs",
        False,
    ),
):
    register_evaluator(
        _name,
        f"{_module}:Options",
        f"{_module}:run",
        reads=_reads,
        description=_description,
        details=f"{_module}:details" if _detailed else None,
    )
