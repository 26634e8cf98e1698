"""Bit-exact CLIP image preprocessing (OpenAI/open_clip and Hugging Face pipelines)."""

from ..configs.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    OPENAI_MEAN,
    OPENAI_STD,
    PreprocessConfig,
)
from .build import image_transform
from .image_io import ImageDecodeError, decode_image, load_image, to_8bit
from .naflex import NaFlexPatches, NaFlexPreprocess
from .transforms import Preprocess, build_preprocess

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "ImageDecodeError",
    "NaFlexPatches",
    "NaFlexPreprocess",
    "Preprocess",
    "PreprocessConfig",
    "build_preprocess",
    "decode_image",
    "image_transform",
    "load_image",
    "to_8bit",
]
