"""The model class a config builds: :class:`~clipforge.models.coca.CoCa` for a config with a
text decoder, :class:`~clipforge.models.clip.CLIP` otherwise."""

from __future__ import annotations

from ..configs import ClipConfig
from ..preprocess import PreprocessConfig
from .clip import CLIP, Towers
from .coca import CoCa


def build_model(
    config: ClipConfig, towers: Towers = "both", preprocess_config: PreprocessConfig | None = None
) -> CLIP:
    """A randomly initialised model of ``config`` (with only ``towers``)."""
    model_class = CoCa if config.decoder is not None else CLIP
    return model_class(config, towers=towers, preprocess_config=preprocess_config)
