"""Model code: layers, image towers, text tower and the CLIP wrapper."""

from .clip import CLIP
from .resnet import ModifiedResNet
from .text import TextTransformer
from .vit import VisionTransformer

__all__ = ["CLIP", "ModifiedResNet", "TextTransformer", "VisionTransformer"]
