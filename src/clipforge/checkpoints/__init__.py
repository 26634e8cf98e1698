"""Checkpoint reading, format translation, architecture inference and the pretrained registry."""

from .apply import apply_state, select_towers
from .directory import LoadedCheckpoint, read_checkpoint, to_native_state
from .errors import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError
from .infer import infer_config, match_architecture
from .pretrained import PretrainedWeights, download_weights, get_pretrained, list_pretrained
from .reader import read_state_dict

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "LoadedCheckpoint",
    "PretrainedWeights",
    "UnsafeCheckpointError",
    "apply_state",
    "download_weights",
    "get_pretrained",
    "infer_config",
    "list_pretrained",
    "match_architecture",
    "read_checkpoint",
    "read_state_dict",
    "select_towers",
    "to_native_state",
]
