"""Crash-safe training checkpoints.

Layout of ``output_dir``::

    step_8/
        model.safetensors        the CLIP weights (clipforge format, see clipforge.save)
        clipforge_config.json    so ``clipforge.load("step_8")`` works for inference
        state.pt                 optimizer, scheduler, scaler, RNG states, data position
        sharded/                 strategy=fsdp only: model and optimizer shards (DCP)
    latest                       text file naming the newest complete step directory

A step directory is written under a temporary name and renamed into place, and ``latest``
is replaced atomically, so a kill at any moment leaves either the previous or the new
checkpoint, never a partial one. ``state.pt`` holds only tensors and plain Python types and
is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..api import save, write_model_tokenizer
from ..atomic import write_text_atomic
from ..checkpoints import get_format
from ..checkpoints.errors import CheckpointError

if TYPE_CHECKING:
    from ..models import CLIP

__all__ = [
    "LATEST",
    "Checkpoint",
    "capture_rng",
    "gather_rng",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest",
    "restore_rng",
    "restore_schedule",
    "restore_training_state",
    "rewind_metrics",
    "save_checkpoint",
    "training_state",
]

LATEST = "latest"
STATE_FILE = "state.pt"
SHARDED_DIR = "sharded"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class Checkpoint:
    """A loaded checkpoint: its directory, step and ``state.pt`` contents."""

    path: Path
    step: int
    state: dict[str, Any]

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"

    def model_state(self) -> dict[str, torch.Tensor]:
        """The CLIP weights as a state dict."""

        return load_file(str(self.weights))


# ----------------------------------------------------------------------------- RNG states
def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch (CPU + all CUDA devices) RNG states as plain types/tensors."""
    version, internal, gauss = random.getstate()
    # the legacy global generator is an MT19937: its state is the 5-tuple
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    return {
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (
            np_state["kind"],
            keys,
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng() -> list[dict[str, Any]]:
    """Every rank's :func:`capture_rng` (a collective when running distributed)."""
    import torch.distributed as dist

    state = capture_rng()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered


# ----------------------------------------------------------------------------- state
def training_state(
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    scaler: Any,
    rng: list[dict[str, Any]],
    extra_params: dict[str, torch.Tensor],
    **info: Any,
) -> dict[str, Any]:
    """The ``state.pt`` payload: only tensors and plain types (``weights_only``-loadable).

    ``rng`` holds one :func:`capture_rng` per rank; ``info`` adds plain entries (data
    position, config, metrics). ``optimizer`` is ``None`` when its state is sharded
    (``strategy=fsdp``: it lives in ``sharded/``).
    """
    return {
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "extra_params": {k: v.detach().cpu() for k, v in extra_params.items()},
        **info,
    }


def restore_training_state(
    ckpt: Checkpoint,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
) -> None:
    """Load weights, extra parameters, optimizer, scheduler and scaler from ``ckpt``.

    ``model`` has the CLIP model as ``model.clip`` and extra parameters as attributes. The
    schedule function itself comes from the current config, not from the checkpoint.
    """
    model.clip.load_state_dict(ckpt.model_state())  # type: ignore[union-attr]
    with torch.no_grad():
        for name, value in ckpt.state.get("extra_params", {}).items():
            getattr(model, name).copy_(value)
    optimizer.load_state_dict(ckpt.state["optimizer"])
    restore_schedule(ckpt, scheduler, scaler)


def restore_schedule(ckpt: Checkpoint, scheduler: Any, scaler: Any) -> None:
    """Load only the scheduler and scaler states of ``ckpt``."""
    sched_state = dict(ckpt.state["scheduler"])
    sched_state["lr_lambdas"] = [None] * len(sched_state.get("lr_lambdas", ()))
    scheduler.load_state_dict(sched_state)
    scaler.load_state_dict(ckpt.state["scaler"])


# ----------------------------------------------------------------------------- writing
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete ``step_N`` directories, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def _prune(output_dir: Path, keep_last: int, protect: Path) -> None:
    for path in list_checkpoints(output_dir)[:-keep_last]:
        if path != protect:
            shutil.rmtree(path, ignore_errors=True)
    for tmp in output_dir.glob(".tmp_step_*"):  # leftovers of killed runs
        if not tmp.name.endswith(f"_{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model: CLIP,
    state: dict[str, Any],
    keep_last: int = 3,
    *,
    weights: dict[str, torch.Tensor] | None = None,
    sharded: Path | None = None,
) -> Path:
    """Write ``step_{step}/`` atomically, point ``latest`` at it, keep the last ``keep_last``.

    ``weights`` replaces ``model.state_dict()`` (an FSDP model's gathered weights);
    ``sharded``, a finished DCP directory, is moved in as ``sharded/``.
    """

    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".tmp_step_{step}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if weights is None:
        save(model, tmp)
    else:
        fmt = get_format("clipforge")
        fmt.write_dir(model.config, model.preprocess_config, weights, tmp)  # type: ignore[misc]
        write_model_tokenizer(model, tmp)  # type: ignore[arg-type]
    torch.save({**state, "step": step}, tmp / STATE_FILE)
    if sharded is not None:
        os.replace(sharded, tmp / SHARDED_DIR)
    for file in tmp.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    if final.exists():  # re-writing a step (e.g. after resuming from an earlier one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    write_text_atomic(root / LATEST, final.name + "\n")
    _prune(root, keep_last, protect=final)
    return final


# ----------------------------------------------------------------------------- reading
def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read ``state.pt`` of a step directory (safely: ``weights_only=True``).

    A missing, truncated or corrupt ``state.pt`` or ``model.safetensors`` raises
    :class:`~clipforge.checkpoints.CheckpointError` naming the file.
    """

    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (no {STATE_FILE})")
    try:
        state = torch.load(state_file, map_location=map_location, weights_only=True)
        step = int(state["step"])
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise CheckpointError(f"{state_file} is damaged: {type(err).__name__}: {err}") from err
    weights = path / "model.safetensors"
    try:
        with safe_open(str(weights), "pt"):  # validates the header and the file's length
            pass
    except Exception as err:  # SafetensorError, FileNotFoundError, ...
        raise CheckpointError(f"{weights} is damaged: {type(err).__name__}: {err}") from err
    return Checkpoint(path=path, step=step, state=state)


def _pointer_target(root: Path) -> Path | None:
    """The step directory named by ``root/latest``; refuses one outside ``root``."""

    pointer = root / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    target = root / name
    if not name or target.resolve().parent != root.resolve():
        raise CheckpointError(
            f"{pointer} names {name!r}, which is not a checkpoint directory inside {root}; "
            f"refusing to follow it (delete {pointer} to resume from the newest step_N)"
        )
    return target if (target / STATE_FILE).is_file() else None


def latest_path(output_dir: str | Path) -> Path | None:
    """The directory ``latest`` points to (or the newest complete one), if any."""
    root = Path(output_dir)
    target = _pointer_target(root)
    if target is not None:
        return target
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_latest(
    output_dir: str | Path, map_location: str | torch.device = "cpu"
) -> Checkpoint | None:
    """The newest intact checkpoint of ``output_dir``, or ``None`` when there is none.

    A damaged newest checkpoint (say, truncated by a full disk) is skipped with a warning
    in favour of the next older intact one; if every one is damaged this raises
    :class:`~clipforge.checkpoints.CheckpointError`.
    """

    root = Path(output_dir)
    first = _pointer_target(root)
    candidates = [first] if first is not None else []
    candidates += [p for p in reversed(list_checkpoints(root)) if p != first]
    errors = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path, map_location)
        except CheckpointError as err:
            errors.append(str(err))
            logging.getLogger("clipforge.train").warning(
                "skipping damaged checkpoint %s (%s); trying an older one", path, err
            )
            continue
        return ckpt
    if errors:
        raise CheckpointError(f"no intact checkpoint in {root}: " + "; ".join(errors))
    return None


def _record_step(line: str) -> float:
    """The step of a JSON-lines record (``inf`` for a torn or malformed line)."""
    try:
        return float(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return float("inf")


def rewind_metrics(path: str | Path, step: int) -> None:
    """Drop JSON-lines records after ``step`` (written by a run killed after its checkpoint)."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text("utf-8").splitlines()
    kept = [line for line in lines if line.strip() and _record_step(line) <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))
