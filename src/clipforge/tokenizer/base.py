"""What every tokenizer shares: ids as a numpy array (no torch needed), and as a tensor."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


class ArrayTokenizer(ABC):
    """A tokenizer producing fixed-length rows of int64 ids.

    Subclasses implement :meth:`to_array`; calling the tokenizer returns the same ids as a
    torch tensor (torch is imported only then: the ONNX runtime path tokenizes without it).
    """

    context_length: int

    @abstractmethod
    def to_array(
        self, texts: str | Sequence[str], context_length: int | None = None, truncate: bool = True
    ) -> np.ndarray:
        """Texts → ``(N, context_length)`` int64 ids."""

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None, truncate: bool = True
    ) -> torch.Tensor:
        """Texts → ``(N, context_length)`` int64 tensor (see :meth:`to_array`)."""
        import torch

        return torch.from_numpy(self.to_array(texts, context_length, truncate))
