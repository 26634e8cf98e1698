"""Model code: layers, the Tower protocol and its registry, image/text towers, the CLIP wrapper."""

from .clip import CLIP
from .coca import CoCa
from .convnext import ConvNextTower
from .counting import count_parameters
from .eva import EvaVisionTransformer
from .factory import build_model
from .pe import PerceptionVisionTransformer
from .protocols import ClipModel
from .resnet import ModifiedResNet
from .swin import SwinTower
from .text import TextTransformer
from .timm_vit import TimmVisionTransformer
from .tower import (
    Tower,
    TowerSettings,
    TransformerTower,
    build_tower,
    register_tower,
    towers_in,
)
from .vit import VisionTransformer
from .vitamin import ViTaminTower

__all__ = [
    "CLIP",
    "ClipModel",
    "CoCa",
    "ConvNextTower",
    "EvaVisionTransformer",
    "ModifiedResNet",
    "PerceptionVisionTransformer",
    "SwinTower",
    "TextTransformer",
    "TimmVisionTransformer",
    "Tower",
    "TowerSettings",
    "TransformerTower",
    "ViTaminTower",
    "VisionTransformer",
    "build_model",
    "build_tower",
    "count_parameters",
    "register_tower",
    "towers_in",
]
