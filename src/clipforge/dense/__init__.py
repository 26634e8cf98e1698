"""Dense text–image heat maps for ViT image towers (MaskCLIP, ClearCLIP, Grad-CAM, plain).

>>> result = clipforge.heatmap(model, "photo.jpg", ["a dog", "a ball"])  # doctest: +SKIP
>>> clipforge.dense.overlay("photo.jpg", result.maps[0]).save("dog.png")  # doctest: +SKIP
"""

from .explain import explain_png, explain_to_files
from .heatmap import DEFAULT_METHOD, HeatmapResult, heatmap, overlay
from .localisation import chance, pointing_hit, threshold_iou
from .methods import METHODS
from .towers import SUPPORTED_TOWERS, ViTParts, last_block_input, patch_tokens, vit_parts

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "SUPPORTED_TOWERS",
    "HeatmapResult",
    "ViTParts",
    "chance",
    "explain_png",
    "explain_to_files",
    "heatmap",
    "last_block_input",
    "overlay",
    "patch_tokens",
    "pointing_hit",
    "threshold_iou",
    "vit_parts",
]
