"""Model configurations and the registry of named architectures."""

from .config import ClipConfig, ConfigError, ResNetConfig, TextConfig, VisionConfig, ViTConfig
from .registry import get_config, list_architectures

__all__ = [
    "ClipConfig",
    "ConfigError",
    "ResNetConfig",
    "TextConfig",
    "ViTConfig",
    "VisionConfig",
    "get_config",
    "list_architectures",
]
