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
from .embedding import EmbeddingResult, embed_images, embed_texts
from .models import CLIP
from .preprocess import PreprocessConfig
from .scoring import clip_score, mean_clip_score, plot_similarity, similarity_matrix
from .tokenizer import tokenize
from .zeroshot import ZeroShotClassifier, ZeroShotResult, get_templates

__version__ = "0.1.0"

__all__ = [
    "CLIP",
    "CheckpointError",
    "CheckpointMismatchError",
    "ClipConfig",
    "EmbeddingResult",
    "PreprocessConfig",
    "UnsafeCheckpointError",
    "ZeroShotClassifier",
    "ZeroShotResult",
    "clip_score",
    "create_model",
    "embed_images",
    "embed_texts",
    "get_config",
    "get_templates",
    "list_architectures",
    "list_pretrained",
    "load",
    "mean_clip_score",
    "plot_similarity",
    "save",
    "similarity_matrix",
    "tokenize",
]
