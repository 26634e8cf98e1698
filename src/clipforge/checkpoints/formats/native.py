"""clipforge's own layout: ``visual.*``, ``text.*``, ``logit_scale`` (see models/).

Directory: ``clipforge_config.json`` (``{"model": ..., "preprocess": ...}``),
``model.safetensors`` and, for a model with its own vocabulary (SigLIP), ``tokenizer.json``.
"""

from __future__ import annotations

from pathlib import Path

from ...configs import ClipConfig
from ...preprocess import PreprocessConfig
from ...tokenizer.files import tokenizer_from_dir
from ...tokenizer.sentencepiece import TOKENIZER_FILE
from ..directory import config_errors, find_weights, read_json, write_directory
from ..errors import CheckpointError
from ..reader import read_state_dict
from .base import CheckpointFormat, LoadedCheckpoint, StateDict, identity

NAME = "clipforge"
CONFIG_FILE = "clipforge_config.json"
WEIGHTS_FILE = "model.safetensors"


def matches(state: StateDict) -> bool:
    """True for clipforge keys (a ``text.`` tower, or a ``visual.`` tower only)."""
    return any(k.startswith("text.") for k in state) or (
        any(k.startswith("visual.") for k in state) and "token_embedding.weight" not in state
    )


def to_native(state: StateDict) -> StateDict:
    return identity(state)


def from_native(state: StateDict) -> StateDict:
    return identity(state)


def read_dir(directory: Path, trust_pickle: bool) -> LoadedCheckpoint:
    """A directory written by ``clipforge.save(..., format="clipforge")``."""
    config_file = directory / CONFIG_FILE
    meta = read_json(config_file)
    if "model" not in meta:
        raise CheckpointError(f"{config_file}: missing key 'model' (the architecture)")
    with config_errors(config_file):
        cfg = ClipConfig.from_dict(meta["model"], "model")
        pp = meta.get("preprocess")
        preprocess = PreprocessConfig.from_dict(pp) if pp is not None else None
    state = read_state_dict(find_weights(directory, (WEIGHTS_FILE,)), trust_pickle)
    tokenizer = None
    if (directory / TOKENIZER_FILE).is_file():  # written by save() for a model's own vocabulary
        tokenizer = tokenizer_from_dir(directory, cfg.text.context_length)
    return LoadedCheckpoint(
        state, cfg, preprocess, str(directory), str(config_file), tokenizer=tokenizer
    )


def write_dir(
    config: ClipConfig, preprocess: PreprocessConfig, state: StateDict, directory: Path
) -> None:
    """Write ``clipforge_config.json`` and ``model.safetensors``."""
    meta = {"model": config.to_dict(), "preprocess": preprocess.to_dict()}
    write_directory(directory, {CONFIG_FILE: meta}, WEIGHTS_FILE, from_native(state))


FORMAT = CheckpointFormat(
    name=NAME,
    matches=matches,
    to_native=to_native,
    from_native=from_native,
    config_files=(CONFIG_FILE,),
    weights_files=(WEIGHTS_FILE,),
    read_dir=read_dir,
    write_dir=write_dir,
    priority=30,
)
