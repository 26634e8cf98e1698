"""Hub-layout checkpoint directories: read any supported one, write any supported one.

A directory is recognised by its config file: ``clipforge_config.json`` (ours),
``open_clip_config.json`` (open_clip hub repos) or ``config.json`` (transformers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..configs import ClipConfig
from ..preprocess import PreprocessConfig
from .errors import CheckpointError
from .formats import hf, native, open_clip
from .reader import read_state_dict


@dataclass
class LoadedCheckpoint:
    """A checkpoint translated to clipforge's layout."""

    state: dict[str, torch.Tensor]
    config: ClipConfig | None
    preprocess: PreprocessConfig | None
    source: str


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable JSON config: {err}") from err


def _weights_in(directory: Path, candidates: tuple[str, ...]) -> Path:
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(
        f"{directory}: no weights file found (looked for {', '.join(candidates)})"
    )


def _read_native(directory: Path, trust_pickle: bool) -> LoadedCheckpoint:
    meta = _read_json(directory / native.CONFIG_FILE)
    cfg = ClipConfig.from_dict(meta["model"])
    preprocess = PreprocessConfig.from_dict(meta["preprocess"]) if "preprocess" in meta else None
    state = read_state_dict(_weights_in(directory, (native.WEIGHTS_FILE,)), trust_pickle)
    return LoadedCheckpoint(state, cfg, preprocess, str(directory))


def _read_open_clip(directory: Path, trust_pickle: bool) -> LoadedCheckpoint:
    meta = _read_json(directory / open_clip.CONFIG_FILE)
    if "model_cfg" not in meta:
        raise CheckpointError(f"{directory / open_clip.CONFIG_FILE}: missing 'model_cfg'")
    cfg = open_clip.config_to_native(meta["model_cfg"])
    preprocess = open_clip.preprocess_to_native(
        meta.get("preprocess_cfg", {}), cfg.vision.image_size
    )
    weights = _weights_in(directory, open_clip.WEIGHTS_FILES)
    state = read_state_dict(weights, trust_pickle)
    return LoadedCheckpoint(to_native_state(state, str(weights)), cfg, preprocess, str(weights))


def _read_hf(directory: Path, trust_pickle: bool) -> LoadedCheckpoint:
    cfg = hf.config_to_native(_read_json(directory / hf.CONFIG_FILE))
    pp_file = directory / "preprocessor_config.json"
    preprocess = None
    if pp_file.is_file():
        preprocess = hf_preprocess_to_native(_read_json(pp_file))
    else:
        preprocess = PreprocessConfig(image_size=cfg.vision.image_size, pipeline="hf")
    weights = _weights_in(directory, hf.WEIGHTS_FILES)
    state = hf.to_native(read_state_dict(weights, trust_pickle))
    return LoadedCheckpoint(state, cfg, preprocess, str(weights))


def hf_preprocess_to_native(pp: dict[str, Any]) -> PreprocessConfig:
    """transformers ``preprocessor_config.json`` → :class:`PreprocessConfig` (HF pipeline)."""
    crop = pp.get("crop_size", 224)
    crop = crop.get("height", 224) if isinstance(crop, dict) else crop
    size = pp.get("size", crop)
    shortest = size.get("shortest_edge", crop) if isinstance(size, dict) else size
    if shortest != crop:
        raise CheckpointError(
            f"HF preprocessing with resize {shortest} != crop {crop} is not supported"
        )
    fields: dict[str, Any] = {"image_size": crop, "pipeline": "hf"}
    for field, key in (("mean", "image_mean"), ("std", "image_std")):
        if key in pp:
            fields[field] = tuple(pp[key])
    if pp.get("resample", 3) != 3:
        fields["interpolation"] = {2: "bilinear", 0: "nearest"}.get(pp["resample"], "bicubic")
    return PreprocessConfig(**fields)


def hf_preprocess_from_native(pp: PreprocessConfig) -> dict[str, Any]:
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": pp.image_size},
        "resample": {"bicubic": 3, "bilinear": 2, "nearest": 0}[pp.interpolation],
        "do_center_crop": True,
        "crop_size": {"height": pp.image_size, "width": pp.image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pp.mean),
        "image_std": list(pp.std),
        "do_convert_rgb": True,
    }


DIRECTORY_READERS = (
    (native.CONFIG_FILE, _read_native),
    (open_clip.CONFIG_FILE, _read_open_clip),
    (hf.CONFIG_FILE, _read_hf),
)


def read_directory(directory: str | Path, trust_pickle: bool = False) -> LoadedCheckpoint:
    """Read a hub-layout directory of any supported library."""
    directory = Path(directory)
    for marker, reader in DIRECTORY_READERS:
        if (directory / marker).is_file():
            return reader(directory, trust_pickle)
    markers = ", ".join(m for m, _ in DIRECTORY_READERS)
    raise CheckpointError(f"{directory}: not a checkpoint directory (none of {markers} found)")


def to_native_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Detect the key layout of a state dict and translate it to clipforge's."""
    from .formats import STATE_FORMATS

    for fmt in STATE_FORMATS:
        if fmt.matches(state):
            return fmt.to_native(state)
    sample = ", ".join(list(state)[:5])
    raise CheckpointError(f"{source}: unrecognised checkpoint layout (first keys: {sample})")


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> LoadedCheckpoint:
    """A file or directory checkpoint, translated to clipforge's layout."""
    path = Path(path)
    if path.is_dir():
        return read_directory(path, trust_pickle)
    state = read_state_dict(path, trust_pickle)
    return LoadedCheckpoint(to_native_state(state, str(path)), None, None, str(path))
