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
from typing import Any

__version__ = "0.1.0"

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
    "Tower": "models",
    "register_tower": "models",
    "EmbeddingResult": "embedding",
    "embed_images": "embedding",
    "embed_texts": "embedding",
    "Index": "index",
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clipforge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
