"""Datasets: data sources (a registry of typed kinds) and the built-in procedural set.

``DataConfig`` describes a dataset (``kind``, ``path``, typed ``options``);
:func:`register_data_source` adds a kind (see :mod:`clipforge.data.sources`).
"""

from .data_config import DataConfig
from .procedural import (
    CLASSNAMES,
    COLOURS,
    DIFFICULTIES,
    HELD_OUT_PAIRS,
    RELATIONS,
    SHAPES,
    SIZES,
    TRAIN_PAIRS,
    ObjectSpec,
    ProceduralCaptions,
    SceneSpec,
    caption_scene,
    render_scene,
    render_zero_shot,
    sample_scene,
    zero_shot_task,
)
from .sources import DATA_SOURCES, BuildContext, list_data_sources, register_data_source

__all__ = [
    "BuildContext",
    "CLASSNAMES",
    "DATA_SOURCES",
    "COLOURS",
    "DIFFICULTIES",
    "DataConfig",
    "HELD_OUT_PAIRS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "TRAIN_PAIRS",
    "ObjectSpec",
    "ProceduralCaptions",
    "SceneSpec",
    "caption_scene",
    "list_data_sources",
    "register_data_source",
    "render_scene",
    "render_zero_shot",
    "sample_scene",
    "zero_shot_task",
]
