"""Generic helpers for hub-layout checkpoint directories: read JSON, find and write files.

What a directory of a given library contains is declared by its format module in
:mod:`clipforge.checkpoints.formats`; these helpers know nothing about any format.
Files are written atomically (a temporary file in the same directory, then ``os.replace``),
so a reader never sees a half-written config or weights file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..atomic import write_atomic
from .errors import CheckpointError


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a config file, or :class:`CheckpointError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: unreadable JSON config: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: a JSON config must be an object, got {type(data).__name__}")
    return data


@contextmanager
def config_errors(path: Path) -> Iterator[None]:
    """Turn any error while interpreting the config file ``path`` into one
    :class:`CheckpointError` naming the file (and the key, for a missing one)."""
    try:
        yield
    except CheckpointError as err:
        if str(path) in str(err):
            raise
        raise CheckpointError(f"{path}: {err}") from err
    except KeyError as err:
        raise CheckpointError(f"{path}: missing key {err}") from err
    except (ValueError, TypeError, AttributeError) as err:  # ConfigError is a ValueError
        raise CheckpointError(f"{path}: invalid config: {err}") from err


def find_weights(directory: Path, candidates: tuple[str, ...]) -> Path:
    """The first of ``candidates`` present in ``directory``."""
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(
        f"{directory}: no weights file found (looked for {', '.join(candidates)})"
    )


def write_directory(
    directory: Path,
    json_files: Mapping[str, Any],
    weights_file: str,
    tensors: Mapping[str, torch.Tensor],
) -> None:
    """Write JSON configs (2-space indent, trailing newline) and a safetensors weights file.

    ``tensors`` may live on any device; they are copied to contiguous CPU tensors that share
    no storage (as safetensors requires) only here, after every conversion has succeeded.
    """

    texts = {name: json.dumps(content, indent=2) + "\n" for name, content in json_files.items()}
    plain = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    directory.mkdir(parents=True, exist_ok=True)
    for filename, text in texts.items():
        write_atomic(directory / filename, lambda p, t=text: p.write_text(t, encoding="utf-8"))
    write_atomic(
        directory / weights_file,
        lambda p: save_file(plain, str(p), metadata={"format": "pt"}),
    )
