"""transformers' ``preprocessor_config.json`` (``CLIPImageProcessor``) ↔ :class:`PreprocessConfig`."""

from __future__ import annotations

import math
from typing import Any

from ...preprocess import PreprocessConfig
from ..errors import CheckpointError

FILE = "preprocessor_config.json"
_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}


def _squash_size(pp: dict[str, Any]) -> int | None:
    """The side of a crop-free ``{"height", "width"}`` resize (SiglipImageProcessor), if any."""
    size = pp.get("size")
    if pp.get("do_center_crop", False) or not isinstance(size, dict) or "height" not in size:
        return None
    if size.get("width", size["height"]) != size["height"]:
        raise CheckpointError(f"only square HF resizes are supported, got {size}")
    return int(size["height"])


def preprocess_to_native(pp: dict[str, Any]) -> PreprocessConfig:
    """transformers ``preprocessor_config.json`` → :class:`PreprocessConfig` (HF pipeline):
    ``CLIPImageProcessor`` (shortest side + centre crop) or ``SiglipImageProcessor`` (squash)."""
    if "max_num_patches" in pp:  # Siglip2ImageProcessor (NaFlex)
        return _naflex(pp)
    squash = _squash_size(pp)
    if squash is not None:
        return PreprocessConfig(image_size=squash, resize_mode="squash", **_common(pp))
    crop = pp.get("crop_size", 224)
    crop = crop.get("height", 224) if isinstance(crop, dict) else crop
    size = pp.get("size", crop)
    shortest = size.get("shortest_edge", crop) if isinstance(size, dict) else size
    if shortest != crop:
        raise CheckpointError(
            f"HF preprocessing with resize {shortest} != crop {crop} is not supported"
        )
    return PreprocessConfig(image_size=crop, **_common(pp))


def _naflex(pp: dict[str, Any]) -> PreprocessConfig:
    """``Siglip2ImageProcessor``: a patch budget, bilinear by default, no fixed size."""
    budget, patch = pp.get("max_num_patches"), pp.get("patch_size", 16)
    if not isinstance(budget, int) or not isinstance(patch, int) or budget < 1 or patch < 1:
        raise CheckpointError(
            f"max_num_patches and patch_size must be positive ints, got {budget!r}, {patch!r}"
        )
    fields = _common({"resample": 2, **pp})
    side = patch * max(1, math.isqrt(budget))
    return PreprocessConfig(
        image_size=side, resize_mode="squash", max_num_patches=budget, patch_size=patch, **fields
    )


def _common(pp: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"pipeline": "hf"}
    for field, key in (("mean", "image_mean"), ("std", "image_std")):
        if key in pp:
            fields[field] = tuple(pp[key])
    if pp.get("resample", 3) != 3:
        fields["interpolation"] = {2: "bilinear", 0: "nearest"}.get(pp["resample"], "bicubic")
    return fields


def preprocess_from_native(pp: PreprocessConfig) -> dict[str, Any]:
    """:class:`PreprocessConfig` → transformers ``preprocessor_config.json``."""
    shared = {
        "do_resize": True,
        "resample": _RESAMPLE[pp.interpolation],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pp.mean),
        "image_std": list(pp.std),
        "do_convert_rgb": True,
    }
    if pp.max_num_patches is not None:
        return {
            "image_processor_type": "Siglip2ImageProcessor",
            "max_num_patches": pp.max_num_patches,
            "patch_size": pp.patch_size,
            **shared,
        }
    square = {"height": pp.image_size, "width": pp.image_size}
    if pp.resize_mode == "squash":  # SigLIP: resize to the square, no crop
        return {"image_processor_type": "SiglipImageProcessor", "size": square, **shared}
    return {
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": pp.image_size},
        "do_center_crop": True,
        "crop_size": square,
        **shared,
    }
