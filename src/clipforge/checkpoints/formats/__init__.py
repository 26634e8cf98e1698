"""The checkpoint format registry: one :class:`CheckpointFormat` per module, ``FORMAT``.

:func:`clipforge.load` and :func:`clipforge.save` loop over / look up :data:`FORMATS`;
adding a format is one module ending with ``FORMAT = CheckpointFormat(...)`` (registered
here, or by a third party with :func:`register_format`) plus its test.

Detection tries formats by ``priority``, highest first: a state dict goes to the first
format whose ``matches`` accepts it, a directory to the first whose marker config file
(its first ``config_files`` entry) it contains.
"""

from __future__ import annotations

from . import (  # noqa: F401  (convnext_keys registers its open_clip layout family)
    coca_keys,
    convnext_keys,
    eva_keys,
    hf,
    hf_text_keys,
    mobileclip_keys,
    native,
    open_clip,
    openai,
    pe_keys,
    siglip2_hf_keys,
    siglip_hf_keys,
    siglip_keys,
    swin_keys,
    timm_vit_keys,
    vitamin_keys,
)
from .base import CheckpointFormat, LoadedCheckpoint
from .registry import (
    FORMATS,
    detect_directory_format,
    detect_state_format,
    get_format,
    list_formats,
    read_checkpoint,
    read_directory,
    register_format,
    to_native_state,
)

_MODULES = (native, open_clip, coca_keys, eva_keys, hf_text_keys, pe_keys, timm_vit_keys,
            siglip_keys, mobileclip_keys, hf, siglip2_hf_keys, siglip_hf_keys, vitamin_keys)  # fmt: skip
for _module in (*_MODULES, openai):
    register_format(_module.FORMAT)


__all__ = [
    "FORMATS",
    "CheckpointFormat",
    "LoadedCheckpoint",
    "detect_directory_format",
    "detect_state_format",
    "get_format",
    "hf",
    "list_formats",
    "native",
    "open_clip",
    "openai",
    "read_checkpoint",
    "read_directory",
    "register_format",
    "to_native_state",
]
