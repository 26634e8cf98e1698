"""What one checkpoint format declares, and what reading one yields.

A format is one module in this folder ending with ``FORMAT = CheckpointFormat(...)``;
:mod:`clipforge.checkpoints.formats` collects them into the registry that
:func:`clipforge.load` and :func:`clipforge.save` loop over.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch

from ...configs import ClipConfig
from ...preprocess import PreprocessConfig
from ...registry import Registry

StateDict = dict[str, torch.Tensor]


@dataclass
class LoadedCheckpoint:
    """A checkpoint translated to clipforge's layout. ``config_source``: the file its config
    was read from, named in errors about the config; ``tokenizer``: the checkpoint's own, when
    it ships one that differs from CLIP's BPE (SigLIP's ``tokenizer.json``)."""

    state: StateDict
    config: ClipConfig | None
    preprocess: PreprocessConfig | None
    source: str
    config_source: str | None = None
    tokenizer: Any = None


class KeyTranslation(Protocol):
    """The translations a key-layout module defines (a module satisfies this protocol)."""

    def config_to_native(self, config: dict[str, Any]) -> ClipConfig: ...
    def config_from_native(self, config: ClipConfig) -> dict[str, Any]: ...
    def to_native(self, state: StateDict) -> StateDict: ...
    def from_native(self, state: StateDict) -> StateDict: ...
    def matches(self, state: StateDict) -> bool: ...


@dataclass(frozen=True)
class LayoutFamily:
    """A model family whose checkpoints in a directory format need their own translation
    (open_clip's EVA and SigLIP towers are timm trunks; transformers' SigLIP is
    ``SiglipModel``). A directory format tries its registered families before its default.

    - ``owns_config(config_dict)`` / ``owns_model(config)``: whether the format's config
      JSON, or a clipforge config, belongs to this family;
    - ``config_to_native`` / ``config_from_native``: the config JSON translation;
    - ``to_native`` / ``from_native``: the state-dict translation;
    - ``read_tokenizer(directory)``: the checkpoint's own tokenizer, or ``None``.
    """

    name: str
    owns_config: Callable[[dict[str, Any]], bool]
    owns_model: Callable[[ClipConfig], bool]
    config_to_native: Callable[[dict[str, Any]], ClipConfig]
    config_from_native: Callable[[ClipConfig], dict[str, Any]]
    to_native: Callable[[StateDict], StateDict]
    from_native: Callable[[StateDict], StateDict]
    read_tokenizer: Callable[[Path], Any] | None = None

    @classmethod
    def of(
        cls,
        name: str,
        layout: KeyTranslation,
        *,
        owns_config: Callable[[dict[str, Any]], bool],
        owns_model: Callable[[ClipConfig], bool],
        read_tokenizer: Callable[[Path], Any] | None = None,
    ) -> LayoutFamily:
        """The family whose translations are ``layout``'s (usually the calling module)."""
        return cls(name, owns_config, owns_model, layout.config_to_native,
                   layout.config_from_native, layout.to_native, layout.from_native,
                   read_tokenizer)  # fmt: skip


class Families(Registry[LayoutFamily]):
    """The layout families of one directory format (a :class:`Registry`), tried in
    registration order."""

    def __init__(self, format_name: str) -> None:
        super().__init__(f"{format_name} layout family")

    def add(self, family: LayoutFamily, *, replace: bool = False) -> LayoutFamily:
        """Register ``family`` under its own name."""
        return self.register(family.name, family, replace=replace)

    def for_config(self, config_dict: dict[str, Any]) -> LayoutFamily | None:
        return next((f for f in self.values() if f.owns_config(config_dict)), None)

    def for_model(self, config: ClipConfig) -> LayoutFamily | None:
        return next((f for f in self.values() if f.owns_model(config)), None)


DirReader = Callable[[Path, bool], LoadedCheckpoint]
DirWriter = Callable[[ClipConfig, PreprocessConfig, StateDict, Path], None]


@dataclass(frozen=True)
class CheckpointFormat:
    """One checkpoint format: its files, its key layout and its translation to/from clipforge's.

    - ``config_files``: JSON files it owns in a hub-layout directory; the first one marks
      such a directory (its presence selects this format). Empty: no directory layout.
    - ``weights_files``: weights file names it reads, in order of preference; ``save``
      writes the first.
    - ``matches(state)``: whether a state dict has this format's key layout. ``None`` for a
      format without a key layout of its own (open_clip directories hold OpenAI's layout).
    - ``to_native`` / ``from_native``: state-dict translation to and from clipforge's layout.
    - ``read_dir(directory, trust_pickle)`` / ``write_dir(config, preprocess, native_state,
      directory)``: the directory layout; ``None`` for formats without one. ``write_dir``
      gets the model's own (possibly meta or GPU) tensors and must convert everything (and
      raise) before writing its first file; ``directory.write_directory`` does the writing.
    - ``priority``: detection order, highest first (ties: registration order).
    """

    name: str
    to_native: Callable[[StateDict], StateDict]
    from_native: Callable[[StateDict], StateDict]
    matches: Callable[[StateDict], bool] | None = None
    config_files: tuple[str, ...] = ()
    weights_files: tuple[str, ...] = ()
    read_dir: DirReader | None = None
    write_dir: DirWriter | None = None
    priority: int = 0

    @classmethod
    def of_state_layout(cls, name: str, layout: KeyTranslation, priority: int) -> CheckpointFormat:
        """A format for bare state dicts in ``layout``'s keys (recognised by its ``matches``)."""
        return cls(name, layout.to_native, layout.from_native, layout.matches, priority=priority)

    @property
    def marker_file(self) -> str | None:
        """The config file whose presence identifies a directory of this format."""
        return self.config_files[0] if self.config_files else None

    @property
    def has_state_layout(self) -> bool:
        """Whether state dicts of this format can be recognised by their keys."""
        return self.matches is not None

    @property
    def has_directory_layout(self) -> bool:
        """Whether this format reads and writes hub-layout directories."""
        return self.read_dir is not None and self.write_dir is not None


def layout_of(module_name: str) -> KeyTranslation:
    """The key-layout module ``module_name`` (pass ``__name__``) as a :class:`KeyTranslation`:
    a layout module defines the protocol's functions at its top level."""
    return cast(KeyTranslation, sys.modules[module_name])


def identity(state: StateDict) -> StateDict:
    """A state dict already in clipforge's layout (a shallow copy)."""
    return dict(state)
