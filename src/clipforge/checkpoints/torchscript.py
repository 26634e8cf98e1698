"""Read the tensors of a TorchScript archive without executing any of its code.

OpenAI distributes CLIP as TorchScript archives. ``torch.jit.load`` would compile and run
the archive's code; instead we unpickle only ``data.pkl`` with an allow-list: module
objects become inert attribute bags and tensors are rebuilt from the raw storages.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, UnsafeCheckpointError
from .views import check_view

#: A stored entry may expand at most this much when decompressed (PyTorch stores them raw;
#: deflate reaches ~1000:1 only on degenerate data, e.g. a zip bomb).
_MAX_EXPANSION = 64

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


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes) -> None:

        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix
        self._where = str(archive.filename)
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return type(name, (_ScriptObject,), {})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise UnsafeCheckpointError(
            f"{self._where}: TorchScript archive references {module}.{name}, which is not a "
            "plain tensor; refused"
        )

    def _rebuild_tensor(
        self, storage: torch.Tensor, offset: Any, size: Any, stride: Any, *_: Any
    ) -> torch.Tensor:
        """The view the archive declares, checked to lie inside its storage (no copy)."""
        if not isinstance(storage, torch.Tensor):
            raise CheckpointError(f"{self._where}: tensor without a storage: {storage!r}")
        size, stride, offset = check_view(size, stride, offset, storage.numel(), self._where)
        return storage.as_strided(size, stride, offset)

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[1] not in _STORAGE_DTYPES:
            raise CheckpointError(f"{self._where}: unsupported storage record {pid!r:.200}")
        _, storage_type, key, _location, _numel = pid
        if key not in self._storages:
            raw = bytearray(read_entry(self._archive, f"{self._prefix}data/{key}", self._where))
            dtype = _STORAGE_DTYPES[storage_type]
            self._storages[key] = (
                torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            )
        return self._storages[key]


def read_entry(archive: zipfile.ZipFile, name: str, where: str) -> bytes:
    """One archive member, refusing one that would decompress to far more than it stores."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{where}: archive member {name} is missing") from None
    if info.file_size > _MAX_EXPANSION * info.compress_size + (1 << 20):
        raise CheckpointError(
            f"{where}: archive member {name} claims {info.file_size} bytes from "
            f"{info.compress_size} stored bytes (a decompression bomb?); refused"
        )
    return archive.read(info)


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
            data = read_entry(archive, names[0], str(path))
            root = _SafeUnpickler(archive, prefix, data).load()
        except (
            pickle.UnpicklingError,
            KeyError,
            ValueError,
            TypeError,
            IndexError,
            AttributeError,
            EOFError,
            RuntimeError,
            zipfile.BadZipFile,
        ) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"{path}: cannot read TorchScript archive: {err}") from err
    tensors: dict[str, torch.Tensor] = {}
    _collect(root, "", tensors)
    return tensors
