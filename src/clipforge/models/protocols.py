"""Structural types for what the embedding, zero-shot, scoring, index and eval code need from
a model, so a type checker sees them (``nn.Module.__getattr__`` would type every attribute as
``Tensor | Module``). :class:`~clipforge.models.CLIP` satisfies :class:`ClipModel`; towers are
:class:`~clipforge.models.tower.Tower` subclasses."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from ..configs import ClipConfig
    from ..preprocess import NaFlexPatches, PreprocessConfig
    from .tower import Tower


@runtime_checkable
class ClipModel(Protocol):
    """A two-tower model: encoders, tokenizer, preprocessing, temperature and bias."""

    @property
    def config(self) -> ClipConfig: ...

    @property
    def visual(self) -> Tower | None: ...

    @property
    def text(self) -> Tower | None: ...

    @property
    def logit_scale(self) -> nn.Parameter: ...

    @property
    def logit_bias(self) -> nn.Parameter | None: ...

    @property
    def training(self) -> bool: ...

    @property
    def preprocess_config(self) -> PreprocessConfig: ...

    @property
    def image_transform(self) -> Callable[..., torch.Tensor | NaFlexPatches]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def tower(self, name: str) -> Tower: ...

    def encode_image(
        self, pixels: torch.Tensor | NaFlexPatches, normalize: bool = False
    ) -> torch.Tensor: ...

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...

    def tokenize(self, texts: str | Sequence[str], truncate: bool = True) -> torch.Tensor: ...

    def preprocess(self, image) -> torch.Tensor | NaFlexPatches: ...

    def num_parameters(self) -> dict[str, int]: ...

    def modules(self) -> Iterator[nn.Module]: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def eval(self) -> object: ...
