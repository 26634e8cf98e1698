"""Model configurations, the config engine and the registry of named architectures."""

from .config import (
    VISION_CONFIGS,
    ClipConfig,
    ResNetConfig,
    TextConfig,
    VisionConfig,
    ViTConfig,
    register_vision_config,
)
from .engine import ConfigError
from .eva import EvaVisionConfig  # noqa: F401  (registers vision.type "eva")
from .registry import (
    get_config,
    is_architecture,
    list_architectures,
    read_architecture_file,
    register_architecture,
)

__all__ = [
    "VISION_CONFIGS",
    "ClipConfig",
    "ConfigError",
    "ResNetConfig",
    "TextConfig",
    "ViTConfig",
    "VisionConfig",
    "get_config",
    "is_architecture",
    "list_architectures",
    "read_architecture_file",
    "register_architecture",
    "register_vision_config",
]
