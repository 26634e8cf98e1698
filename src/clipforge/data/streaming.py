"""The base class of iterable (streaming) data sources: what the loader may ask of them is
declared here, not probed for."""

from __future__ import annotations

from typing import ClassVar

from torch.utils.data import IterableDataset


class StreamingSource(IterableDataset):
    """An iterable source that the training loader drives by epoch (and, optionally, resumes
    mid-stream by sample count instead of reading and discarding batches)."""

    supports_start: ClassVar[bool] = False

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shard order and shuffle seeds (default: nothing to select)."""

    def set_start(self, samples: int) -> None:
        """Skip the first ``samples`` samples of the stream (only if ``supports_start``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot start mid-stream")
