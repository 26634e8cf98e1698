"""The data-source registry: ``kind`` → (typed options dataclass, dataset builder).

Each source is one module with an options dataclass and a builder::

    build(ctx: BuildContext) -> Dataset   # ctx: cfg, transform, tokenize, seed, rank, world_size

Built-in sources are referenced as ``"module:attribute"`` strings and imported only when
used, so optional dependencies (webdataset, pyarrow, ...) are needed only by their kinds.
:func:`register_data_source` adds one at run time (objects or strings).

``DataConfig`` checks its ``kind`` and option keys as soon as it is made
(:func:`check_options`); :func:`validate_options` builds the typed options, optionally
through a config engine's ``coerce`` so values are converted and errors name
``data.options.<key>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..configs import ConfigError
from ..configs.engine import Coerce, build, check_keys
from ..registry import Registry, import_ref

__all__ = [
    "DATA_SOURCES",
    "BuildContext",
    "DataSource",
    "check_options",
    "get_data_source",
    "list_data_sources",
    "register_data_source",
    "resolve_builder",
    "source_options",
    "validate_options",
]


@dataclass(frozen=True)
class BuildContext:
    """What a data source's builder receives: the data config, the model's preprocessing
    (``transform``: image -> tensor) and tokenizer (``tokenize``: text -> token ids), the
    run's seed and this process's shard (``rank`` of ``world_size``). Map-style datasets
    leave sharding to the sampler; streaming ones shard themselves."""

    cfg: Any
    transform: Callable[[Any], Any]
    tokenize: Callable[[str], Any]
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    def with_config(self, cfg: Any) -> BuildContext:
        """The same context for another data config (a wrapper source's inner one)."""
        return dataclasses.replace(self, cfg=cfg)


@dataclass(frozen=True)
class DataSource:
    """One registered data kind: its options dataclass and builder (objects or refs)."""

    name: str
    options: type | str  # a dataclass, or "module:Class"
    builder: Callable[..., Any] | str  # build(ctx: BuildContext) -> Dataset
    needs_path: bool = True  # data.path is required
    #: ``labelled(cfg, *, limit, n_per_class, n_classes) -> LabelledImages`` (or
    #: "module:function"): the source as a classification dataset (``n_classes``: the
    #: number of class names the caller gives, or ``None``); ``None``: it has no labels
    labelled: Callable[..., Any] | str | None = None
    #: ``captions(cfg, *, limit) -> CaptionedImages`` (or "module:function"): the source as
    #: image-caption pairs for retrieval; ``None``: it has no captions
    captions: Callable[..., Any] | str | None = None

    @property
    def yields(self) -> tuple[str, ...]:
        """What the source yields: ``"batches"`` (training), ``"labelled_images"``,
        ``"captions"`` (evaluation)."""
        kinds = [("batches", True), ("labelled_images", self.labelled), ("captions", self.captions)]
        return tuple(name for name, present in kinds if present is not None)

    def read_labelled(
        self, cfg: Any, *, limit: int | None, n_per_class: int = 2, n_classes: int | None = None
    ) -> Any:
        """The source's labelled images (a :class:`ConfigError` if it yields none)."""
        if self.labelled is None:
            raise ConfigError(f"data kind {self.name!r} has no labels ({_who_yields('labelled')})")
        reader = import_ref(self.labelled)
        return reader(cfg, limit=limit, n_per_class=n_per_class, n_classes=n_classes)

    def read_captions(self, cfg: Any, *, limit: int | None) -> Any:
        """The source's image-caption pairs (a :class:`ConfigError` if it yields none)."""
        if self.captions is None:
            raise ConfigError(f"data kind {self.name!r} has no captions ({_who_yields('captions')})")
        return import_ref(self.captions)(cfg, limit=limit)

    @property
    def options_class(self) -> type:
        """The options dataclass (imported on first use)."""
        cls = import_ref(self.options)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"data source {self.name!r}: options {cls!r} is not a dataclass")
        return cls

    @property
    def build(self) -> Callable[..., Any]:
        """The builder function (imported on first use)."""
        return import_ref(self.builder)


#: data kind -> its :class:`DataSource`
DATA_SOURCES: Registry[DataSource] = Registry("data.kind")


def register_data_source(
    name: str,
    options: type | str,
    builder: Callable[..., Any] | str,
    *,
    needs_path: bool = True,
    labelled: Callable[..., Any] | str | None = None,
    captions: Callable[..., Any] | str | None = None,
    replace: bool = False,
) -> DataSource:
    """Register data kind ``name``; ``replace=True`` overrides an existing one.

    ``builder`` makes the training dataset; ``labelled`` / ``captions`` (optional) read the
    same source for evaluation (see :class:`DataSource`)."""
    source = DataSource(name, options, builder, needs_path, labelled, captions)
    return DATA_SOURCES.register(name, source, replace=replace)


def list_data_sources() -> list[str]:
    """The registered data kinds, sorted."""
    return sorted(DATA_SOURCES.names())


def get_data_source(kind: str) -> DataSource:
    """The source of ``kind``; a did-you-mean :class:`ConfigError` listing kinds if unknown."""
    return DATA_SOURCES.get(kind)


def check_options(
    kind: str, options: Mapping[str, Any] | None, prefix: str = "data", path: Any = ""
) -> None:
    """Check ``kind``, the option keys (not values) and that a needed path is given."""
    source = get_data_source(kind)
    check_keys(source.options_class, options or {}, f"{prefix}.options", "option")
    if source.needs_path and path is None:
        raise ConfigError(f"data kind {kind!r} needs '{prefix}.path'")


def validate_options(
    kind: str, options: Any, coerce: Coerce | None = None, prefix: str = "data"
) -> Any:
    """The typed options of ``kind`` from a dict (or an options instance, returned as is)."""
    source = get_data_source(kind)
    return build(source.options_class, options, f"{prefix}.options", coerce, "option")


def source_options(cfg: Any, kind: str, what: str = "option") -> Any:
    """Builders' helper: ``cfg.options`` (dict or dataclass) as ``kind``'s typed options."""
    cls = get_data_source(kind).options_class
    return build(cls, cfg.options, "data.options", what=what)


def resolve_builder(kind: str) -> Callable[..., Any]:
    """The builder registered for ``kind`` (imported now)."""
    return get_data_source(kind).build


def _who_yields(attribute: str) -> str:
    names = [n for n, source in DATA_SOURCES.items() if getattr(source, attribute) is not None]
    return "kinds that do: " + ", ".join(names)


#: the built-in kinds: module, and whether it reads labelled images / captions
for _name, _module, _labelled, _captions in (
    ("procedural", "clipforge.data.procedural_source", True, False),
    ("csv", "clipforge.data.tabular", True, True),
    ("folder", "clipforge.data.folder", True, False),
    ("webdataset", "clipforge.data.webdataset_source", False, False),
    ("archive", "clipforge.data.archive", True, True),
    ("mnist", "clipforge.data.mnist", True, False),
    ("clip_benchmark", "clipforge.data.clip_benchmark_wds", True, False),
):
    register_data_source(
        _name,
        f"{_module}:Options",
        f"{_module}:build",
        needs_path=_name != "procedural",
        labelled=f"{_module}:labelled_images" if _labelled else None,
        captions=f"{_module}:captioned_images" if _captions else None,
    )
