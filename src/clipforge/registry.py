"""One registry type for every extension point: architectures, towers, parameter counters,
checkpoint formats, data sources, evaluators, search backends, pretrained entries.

Each seam owns one :class:`Registry` in the folder that uses it. All of them behave alike:

- ``register(name, entry)`` adds an entry; a second entry under the same name is refused
  unless ``replace=True`` (one policy for duplicate names everywhere);
- ``register_lazy(name, "package.module:attr")`` adds an entry that is imported on first
  use — for entries that need an optional dependency (faiss, pymilvus, ray...);
- ``get(name)`` returns the entry, or raises :class:`~clipforge.errors.ConfigError` with a
  did-you-mean hint and the valid names;
- ``names()`` lists the names in registration order.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

from .errors import ClipforgeError, ConfigError

__all__ = ["Registry", "did_you_mean", "import_ref", "unknown_name"]

T = TypeVar("T")
E = TypeVar("E")


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or an empty string."""
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    if not close:  # a case slip ("vit-b-32") is the most common typo of all
        close = [v for v in valid if v.lower() == name.lower()][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(what: str, name: str, valid: Iterable[str]) -> ConfigError:
    """``unknown <what> 'name' (did you mean ...?); valid: ['a', 'b']``."""
    valid = sorted(valid)
    return ConfigError(f"unknown {what} {name!r}{did_you_mean(name, valid)}; valid: {valid}")


def import_ref(ref: Any) -> Any:
    """The object a ``"package.module:attr"`` string names (imported now), or ``ref`` itself
    when it is not a string."""
    if not isinstance(ref, str):
        return ref
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"a reference must read 'package.module:attr', got {ref!r}")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"{ref!r} needs module {module_name!r}, which failed: {err}", name=err.name
        ) from err
    try:
        for part in attr.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    return value


class _Lazy:
    """An entry not imported yet: ``"package.module:attr"``."""

    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"lazy entry must read 'package.module:attr', got {target!r}")
        self.target = target

    def load(self) -> object:
        return import_ref(self.target)


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is used in messages: "unknown {kind} 'x'").

    ``error`` is the exception raised for an unknown name (a :class:`ConfigError` subclass
    by default, so the CLI prints one line and exits 2).
    """

    def __init__(self, kind: str, *, error: type[ClipforgeError] = ConfigError) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, T | _Lazy] = {}

    @overload
    def register(self, name: str, entry: E, *, replace: bool = False) -> E: ...

    @overload
    def register(self, name: str, entry: None = None, *, replace: bool = False) -> Callable[[E], E]: ...

    def register(self, name: str, entry: object = None, *, replace: bool = False) -> object:
        """Add ``entry`` under ``name`` (or use as a decorator: ``@registry.register("x")``)."""
        if entry is None:

            def decorate(value: E) -> E:
                self._add(name, value, replace)
                return value

            return decorate
        self._add(name, entry, replace)
        return entry

    def register_lazy(self, name: str, target: str, *, replace: bool = False) -> None:
        """Add an entry imported on first use from ``"package.module:attr"``."""
        self._add(name, _Lazy(target), replace)

    def _add(self, name: str, entry: object, replace: bool) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._entries and not replace:
            raise ValueError(
                f"{self.kind} {name!r} is already registered (pass replace=True to override it)"
            )
        self._entries[name] = entry  # type: ignore[assignment]

    def unregister(self, name: str) -> None:
        """Remove ``name`` (unknown names raise like :meth:`get`)."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> T:
        """The entry called ``name``; the registry's error, with a hint, if there is none."""
        if name not in self._entries:
            raise self._error(self.unknown_message(name))
        entry = self._entries[name]
        if isinstance(entry, _Lazy):
            entry = self._entries[name] = entry.load()  # type: ignore[assignment]
        return entry  # type: ignore[return-value]

    def unknown_message(self, name: object) -> str:
        """``unknown <kind> 'x' (did you mean 'y'?); valid: [...]``."""
        return str(unknown_name(self.kind, str(name), self.names()))

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """``(name, entry)`` pairs (lazy entries are imported)."""
        for name in self.names():
            yield name, self.get(name)

    def values(self) -> Iterator[T]:
        for _, entry in self.items():
            yield entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
