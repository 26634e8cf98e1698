"""``strategy: fsdp``: fully sharded data parallelism (PyTorch's FSDP2, ``fully_shard``).

Each transformer block of both towers (``clip.tower(name).blocks``, the Tower protocol) is
one FSDP unit; the root unit holds the rest (embeddings, projections). ``fully_shard``
refuses scalar parameters (``logit_scale``, the SigLIP bias: "fully_shard doesn't support
scalar parameters"), so those stay replicated plain tensors whose gradients
:func:`average_gradients` all-reduces, which keeps checkpoints in their usual shapes.
The other parameters, their gradients and optimizer state are sharded ``DTensor`` objects,
so a tower that does not fit one device is spread over all ranks; a block's weights are gathered
only while it runs. Gradients are reduce-scattered and averaged like DDP's, so a run matches
DDP's losses and gradients (up to float summation order).

Checkpoints stay ``step_N/`` directories (``clipforge.load`` reads their consolidated
``model.safetensors``), plus ``sharded/``: the model and optimizer state written by every
rank with :mod:`torch.distributed.checkpoint`, from which a run resumes without gathering
the full model on one rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UsageError
from ..models.layers import ResidualAttentionBlock
from .checkpoint import SHARDED_DIR, Checkpoint, restore_schedule

# torch's FSDP and checkpoint packages (~1.3 s to import) load inside the functions below:
# only strategy=fsdp runs them, and every training run imports this module.
if TYPE_CHECKING:
    from torch.distributed.fsdp import FSDPModule

__all__ = [
    "SHARDED_DIR",
    "average_gradients",
    "clip_grad_norm_",
    "full_state_dict",
    "load_sharded",
    "restore_sharded",
    "no_sync",
    "save_sharded",
    "shard",
]

_TOWERS = ("image", "text")


def shard(model: nn.Module, clip: Any) -> list[nn.Parameter]:
    """Shard every tower block of ``clip`` and then the root ``model`` (in place).

    Returns the scalar parameters left replicated (see the module docstring).
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    scalars = [p for p in model.parameters() if p.ndim == 0]
    for name in _TOWERS:
        for block in clip.tower(name).blocks:
            fully_shard(block)
            if isinstance(block, ResidualAttentionBlock):  # pooling towers call it directly
                register_fsdp_forward_method(block, "forward_at")
    fully_shard(model, ignored_params=set(scalars))
    return scalars


def average_gradients(params: list[nn.Parameter]) -> None:
    """All-reduce-average the gradients of replicated ``params`` (what DDP would do)."""
    if not params:
        return
    world = dist.get_world_size()
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= world


@contextlib.contextmanager
def no_sync(model: FSDPModule) -> Iterator[None]:
    """Accumulate gradients without reduce-scattering them (GradCache micro-batches)."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def clip_grad_norm_(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip sharded and replicated gradients together by their global norm (a collective)."""
    from torch.distributed.tensor import DTensor

    groups = [
        [p for p in params if p.grad is not None and isinstance(p, DTensor) == sharded]
        for sharded in (True, False)
    ]
    norms = []
    for group in groups:
        if group:
            norm = torch.nn.utils.get_total_norm([g for p in group if (g := p.grad) is not None])
            norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    total = torch.linalg.vector_norm(torch.stack(norms))
    for group in groups:
        torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s unsharded weights on CPU, on rank 0 only (empty elsewhere); a collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    # full_state_dict=True gathers every value into a plain tensor
    return cast(dict[str, torch.Tensor], get_model_state_dict(module, options=options))


def save_sharded(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its shards of the model and optimizer state into ``directory``."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    # save/load from their modules: the package re-exports them without an __all__
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp_save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))


def load_sharded(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load :func:`save_sharded`'s state into an already sharded ``model`` and ``optimizer``."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp_load(state, checkpoint_id=str(directory))
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )


def restore_sharded(
    ckpt: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
) -> None:
    """Resume an FSDP run from ``ckpt``'s ``sharded/`` state (plus scheduler and scaler)."""
    directory = ckpt.path / SHARDED_DIR
    if not directory.is_dir():
        raise UsageError(
            f"{ckpt.path} has no {SHARDED_DIR}/ (written by a strategy=ddp run); resume it "
            f"with strategy=ddp, or start from its weights with model.init_from={ckpt.path}"
        )
    load_sharded(directory, model, optimizer)
    restore_schedule(ckpt, scheduler, scaler)
