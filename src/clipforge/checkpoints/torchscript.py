"""Read the tensors of a TorchScript archive without executing any of its code.

OpenAI distributes CLIP as TorchScript archives. ``torch.jit.load`` would compile and run
the archive's code; instead we unpickle only ``data.pkl`` with an allow-list: module
objects become inert attribute bags and tensors are rebuilt from the raw storages.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, UnsafeCheckpointError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stand-in for a scripted module: keeps its attributes, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_: Any) -> torch.Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return type(name, (_ScriptObject,), {})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise UnsafeCheckpointError(
            f"TorchScript archive references {module}.{name}, which is not a plain tensor; refused"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        _, storage_type, key, _location, _numel = pid
        if key not in self._storages:
            raw = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
            dtype = _STORAGE_DTYPES[storage_type]
            self._storages[key] = (
                torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            )
        return self._storages[key]


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a zip archive with TorchScript code (``constants.pkl`` / ``code/``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def _collect(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = obj.__dict__.get("_state", obj.__dict__) if isinstance(obj, _ScriptObject) else obj
    if isinstance(state, torch.Tensor):
        out[prefix.rstrip(".")] = state.clone()
        return
    if isinstance(state, dict):
        for key, value in state.items():
            if isinstance(value, torch.Tensor | _ScriptObject | dict):
                _collect(value, f"{prefix}{key}.", out)


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors held by the modules of a TorchScript archive, keyed like ``state_dict``."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not names:
            raise CheckpointError(f"{path}: TorchScript archive without data.pkl")
        prefix = names[0][: -len("data.pkl")]
        try:
            root = _SafeUnpickler(archive, prefix, archive.read(names[0])).load()
        except (pickle.UnpicklingError, KeyError, ValueError, TypeError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"{path}: cannot read TorchScript archive: {err}") from err
    tensors: dict[str, torch.Tensor] = {}
    _collect(root, "", tensors)
    return tensors
