"""Datasets: a built-in procedural image-caption set that runs offline."""

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

__all__ = [
    "CLASSNAMES",
    "COLOURS",
    "DIFFICULTIES",
    "HELD_OUT_PAIRS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "TRAIN_PAIRS",
    "ObjectSpec",
    "ProceduralCaptions",
    "SceneSpec",
    "caption_scene",
    "render_scene",
    "render_zero_shot",
    "sample_scene",
    "zero_shot_task",
]
