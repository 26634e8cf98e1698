"""clipforge: a faithful, fast and friendly CLIP toolkit.

>>> import clipforge
>>> model = clipforge.create_model("ViT-B-32")
>>> model.encode_text(model.tokenize(["a photo of a cat"]), normalize=True).shape
torch.Size([1, 512])

Public names are imported lazily, so ``import clipforge.onnx`` (ONNX Runtime inference)
works without torch installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

_EXPORTS: dict[str, str] = {
    "create_model": "api",
    "load": "api",
    "save": "api",
    "CheckpointError": "checkpoints",
    "CheckpointMismatchError": "checkpoints",
    "UnsafeCheckpointError": "checkpoints",
    "list_pretrained": "checkpoints",
    "ClipConfig": "configs",
    "get_config": "configs",
    "list_architectures": "configs",
    "register_architecture": "configs",
    "ConfigError": "configs",
    "ClipforgeError": "errors",
    "Registry": "registry",
    "Tower": "models",
    "register_tower": "models",
    "EmbeddingResult": "embedding",
    "embed_images": "embedding",
    "embed_texts": "embedding",
    "Index": "index",
    "heatmap": "dense",
    "CLIP": "models",
    "PreprocessConfig": "preprocess",
    "clip_score": "scoring",
    "mean_clip_score": "scoring",
    "plot_similarity": "scoring",
    "similarity_matrix": "scoring",
    "tokenize": "tokenizer",
    "TextConditioning": "features",
    "hidden_state": "features",
    "hidden_states": "features",
    "llava_image_features": "features",
    "sd_text_conditioning": "features",
    "ZeroShotClassifier": "zeroshot",
    "ZeroShotResult": "zeroshot",
    "get_templates": "zeroshot",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what editors and type checkers see; mirrors _EXPORTS (tested)
    from .api import create_model as create_model, load as load, save as save
    from .checkpoints import (
        CheckpointError as CheckpointError,
        CheckpointMismatchError as CheckpointMismatchError,
        UnsafeCheckpointError as UnsafeCheckpointError,
        list_pretrained as list_pretrained,
    )
    from .configs import (
        ClipConfig as ClipConfig,
        ConfigError as ConfigError,
        get_config as get_config,
        list_architectures as list_architectures,
        register_architecture as register_architecture,
    )
    from .dense import heatmap as heatmap
    from .embedding import (
        EmbeddingResult as EmbeddingResult,
        embed_images as embed_images,
        embed_texts as embed_texts,
    )
    from .errors import ClipforgeError as ClipforgeError
    from .features import (
        TextConditioning as TextConditioning,
        hidden_state as hidden_state,
        hidden_states as hidden_states,
        llava_image_features as llava_image_features,
        sd_text_conditioning as sd_text_conditioning,
    )
    from .index import Index as Index
    from .models import CLIP as CLIP, Tower as Tower, register_tower as register_tower
    from .preprocess import PreprocessConfig as PreprocessConfig
    from .registry import Registry as Registry
    from .scoring import (
        clip_score as clip_score,
        mean_clip_score as mean_clip_score,
        plot_similarity as plot_similarity,
        similarity_matrix as similarity_matrix,
    )
    from .tokenizer import tokenize as tokenize
    from .zeroshot import (
        ZeroShotClassifier as ZeroShotClassifier,
        ZeroShotResult as ZeroShotResult,
        get_templates as get_templates,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clipforge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
