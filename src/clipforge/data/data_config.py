"""``DataConfig``: where batches (or evaluation samples) come from.

``kind`` names a data source in :data:`clipforge.data.sources.DATA_SOURCES`; ``options`` are
that source's typed options (a dict here, checked against its options dataclass as soon as
the config is made: an unknown kind or option key is a did-you-mean :class:`ConfigError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..configs import ConfigError
from ..configs.engine import Coerce
from .sources import check_options, validate_options

__all__ = ["ConfigError", "DataConfig"]


@dataclass
class DataConfig:
    """Where batches come from; ``kind`` selects a source in ``data.sources.DATA_SOURCES``."""

    kind: str = "procedural"  # "procedural" | "csv" | "folder" | "webdataset" | registered
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None  # source image size (procedural); None: the model's
    num_workers: int = 0

    def __post_init__(self) -> None:

        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        check_options(self.kind, self.options, path=self.path)

    def typed_options(self, coerce: Coerce | None = None, prefix: str = "data") -> Any:
        """``options`` as the kind's options dataclass (``coerce``: a config engine's)."""

        return validate_options(self.kind, self.options, coerce, prefix)

    def coerce_options(self, coerce: Coerce, prefix: str = "data") -> None:
        """Convert ``options`` to their declared types in place (keys given stay the keys)."""
        typed = self.typed_options(coerce, prefix)
        self.options = {key: getattr(typed, key) for key in self.options}
