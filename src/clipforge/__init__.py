"""clipforge: a faithful, fast and friendly CLIP toolkit.

>>> import clipforge
>>> model = clipforge.create_model("ViT-B-32")
>>> model.encode_text(model.tokenize(["a photo of a cat"]), normalize=True).shape
torch.Size([1, 512])
"""

from .api import create_model, load, save
from .checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    list_pretrained,
)
from .configs import ClipConfig, get_config, list_architectures
from .models import CLIP
from .preprocess import PreprocessConfig
from .tokenizer import tokenize

__version__ = "0.1.0"

__all__ = [
    "CLIP",
    "CheckpointError",
    "CheckpointMismatchError",
    "ClipConfig",
    "PreprocessConfig",
    "UnsafeCheckpointError",
    "create_model",
    "get_config",
    "list_architectures",
    "list_pretrained",
    "load",
    "save",
    "tokenize",
]
