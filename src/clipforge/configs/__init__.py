"""Model configurations, the config engine and the registry of named architectures."""

from .engine import ConfigError
from .eva import EvaVisionConfig  # noqa: F401  (registers vision.type "eva")
from .model_config import (
    TEXT_CONFIGS,
    VISION_CONFIGS,
    ClipConfig,
    ResNetConfig,
    TextConfig,
    VisionConfig,
    ViTConfig,
    register_text_config,
    register_vision_config,
)
from .registry import (
    get_config,
    get_preprocess,
    get_tokenizer_source,
    is_architecture,
    list_architectures,
    read_architecture_file,
    register_architecture,
)
from .siglip import SigLipNaFlexVisionConfig, SigLipTextConfig, SigLipVisionConfig

__all__ = [
    "TEXT_CONFIGS",
    "VISION_CONFIGS",
    "ClipConfig",
    "ConfigError",
    "ResNetConfig",
    "SigLipNaFlexVisionConfig",
    "SigLipTextConfig",
    "SigLipVisionConfig",
    "TextConfig",
    "ViTConfig",
    "VisionConfig",
    "get_config",
    "get_preprocess",
    "get_tokenizer_source",
    "is_architecture",
    "list_architectures",
    "read_architecture_file",
    "register_architecture",
    "register_text_config",
    "register_vision_config",
]
