"""Checkpoint reading, format translation, architecture inference and the pretrained registry."""

from .apply import apply_state, select_towers
from .errors import (
    CheckpointError,
    CheckpointMismatchError,
    UnknownFormatError,
    UnsafeCheckpointError,
)
from .formats import (
    CheckpointFormat,
    LoadedCheckpoint,
    detect_directory_format,
    detect_state_format,
    get_format,
    list_formats,
    read_checkpoint,
    register_format,
    to_native_state,
)
from .infer import infer_config, match_architecture
from .pretrained import (
    HubTokenizer,
    PretrainedWeights,
    download_tokenizer,
    download_weights,
    get_pretrained,
    list_pretrained,
    release_tokenizer,
)
from .reader import read_state_dict

__all__ = [
    "CheckpointError",
    "CheckpointFormat",
    "CheckpointMismatchError",
    "HubTokenizer",
    "LoadedCheckpoint",
    "PretrainedWeights",
    "UnknownFormatError",
    "UnsafeCheckpointError",
    "apply_state",
    "detect_directory_format",
    "detect_state_format",
    "download_tokenizer",
    "release_tokenizer",
    "download_weights",
    "get_format",
    "get_pretrained",
    "infer_config",
    "list_formats",
    "list_pretrained",
    "match_architecture",
    "read_checkpoint",
    "read_state_dict",
    "register_format",
    "select_towers",
    "to_native_state",
]
