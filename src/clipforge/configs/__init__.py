"""Model configurations, the config engine and the registry of named architectures."""

from .coca import CocaTextConfig, CocaVisionConfig, MultimodalDecoderConfig
from .convnext import ConvNextVisionConfig  # noqa: F401  (registers vision.type "convnext")
from .engine import ConfigError
from .eva import EvaVisionConfig  # noqa: F401  (registers vision.type "eva")
from .fastvit import FastViTConfig, MobileCLIPViTConfig
from .hf_text import M2M100TextConfig, RobertaTextConfig, T5TextConfig
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
from .pe import PerceptionVisionConfig  # noqa: F401  (registers vision.type "pe")
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
from .swin import SwinConfig  # noqa: F401  (registers vision.type "swin")
from .timm_vit import TimmViTConfig  # noqa: F401  (registers vision.type "timm_vit")
from .vitamin import ViTaminVisionConfig  # noqa: F401  (registers vision.type "vitamin")

__all__ = [
    "TEXT_CONFIGS",
    "VISION_CONFIGS",
    "ClipConfig",
    "CocaTextConfig",
    "CocaVisionConfig",
    "MultimodalDecoderConfig",
    "ConfigError",
    "FastViTConfig",
    "MobileCLIPViTConfig",
    "M2M100TextConfig",
    "ResNetConfig",
    "RobertaTextConfig",
    "SigLipNaFlexVisionConfig",
    "SigLipTextConfig",
    "SigLipVisionConfig",
    "T5TextConfig",
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
