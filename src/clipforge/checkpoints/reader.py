"""Read a checkpoint file into a flat ``{name: tensor}`` dict, safely.

Supported: safetensors, ``torch.save`` pickles (read with ``weights_only=True``; anything
that would run code is refused with :class:`UnsafeCheckpointError`), and TorchScript
archives (tensors only, no code executed). Training checkpoints that wrap the weights in
``state_dict``/``model`` and DDP's ``module.`` prefixes are unwrapped.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CheckpointError, UnsafeCheckpointError
from .torchscript import is_torchscript_archive, read_torchscript_tensors
from .views import check_tensors

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


def _load_pickle(path: Path, trust_pickle: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {err}") from err
        raise UnsafeCheckpointError(
            f"{path}: refused to unpickle: the file asks to run code or build objects that are "
            f"not plain tensors (it references {_unsafe_globals(path, err)}). Loading it could "
            "execute arbitrary code. Convert it to safetensors, or pass trust_pickle=True only "
            "if you fully trust its origin."
        ) from err
    except (RuntimeError, EOFError, OSError, KeyError, IndexError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {err}") from err


_OS_MODULES = {"posix": "os", "nt": "os"}  # how os functions are pickled per platform


def _unsafe_globals(path: Path, err: Exception) -> str:
    """The globals a refused pickle asks for, e.g. ``os.system``."""
    names = re.findall(r"GLOBAL ([\w.]+)", str(err))
    if not names:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - only a hint for the message
            names = []
    shown = []
    for name in dict.fromkeys(names):
        module, _, attr = name.rpartition(".")
        alias = _OS_MODULES.get(module)
        shown.append(f"{alias}.{attr} ({name})" if alias else name)
    return ", ".join(shown[:5]) or "a non-tensor object"


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(obj) / 2:
            return tensors
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    raise CheckpointError(f"{path}: no tensor state dict found in the checkpoint")


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key if all keys carry it (e.g. DDP's ``module.``)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file of any supported container format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a valid safetensors file: {err}") from err
    elif is_torchscript_archive(path):
        state = read_torchscript_tensors(path)
    else:
        state = _unwrap(_load_pickle(path, trust_pickle), path)
        check_tensors(state, str(path))
    for prefix in ("module.", "_orig_mod."):
        state = strip_prefix(state, prefix)
    return state
