"""Worker for the multi-process training tests (run under ``torchrun``, gloo, CPU).

``dist_train_worker.py CONFIG.json key=value ...`` runs :func:`clipforge.train.train` on the
config plus overrides; the test reads the losses from ``metrics.jsonl`` and the weights from
the final checkpoint. ``dist_train_worker.py --grads CONFIG.json OUT.pt`` computes one
step's gradients of the config's architecture on :func:`grad_batch` under DDP and under
FSDP (each rank its half, GradCache micro-batches of 2) and rank 0 saves the full
gradients and losses to ``OUT.pt``.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from clipforge.losses import ClipLoss
from clipforge.train import ModelConfig, fsdp, load_config, train
from clipforge.train.gradcache import ContrastiveModel, contrastive_step
from clipforge.train.loop import build_model

GRAD_BATCH = 8


def tiny_model(architecture: dict) -> ContrastiveModel:
    torch.manual_seed(0)
    return ContrastiveModel(build_model(ModelConfig(architecture=architecture))).train()


def grad_batch(model: ContrastiveModel) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    captions = [f"{i} red circle left of {i % 3} squares" for i in range(GRAD_BATCH)]
    return torch.randn(GRAD_BATCH, 3, 32, 32, generator=gen), model.clip.tokenize(captions)


def full_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's whole gradient (gathering DTensor shards: a collective)."""
    out = {}
    for name, param in model.named_parameters():
        grad = param.grad
        out[name] = grad.full_tensor() if isinstance(grad, DTensor) else grad.clone()
    return out


def gradients(config: str, out_path: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    architecture = json.loads(Path(config).read_text())["model"]["architecture"]
    results: dict[str, dict] = {}
    for strategy in ("ddp", "fsdp"):
        model = tiny_model(architecture)
        images, tokens = grad_batch(model)
        n = GRAD_BATCH // world
        images, tokens = images[rank * n : (rank + 1) * n], tokens[rank * n : (rank + 1) * n]
        if strategy == "fsdp":
            replicated = fsdp.shard(model, model.clip)
            forward, no_sync = model, partial(fsdp.no_sync, model)
        else:
            replicated, forward = [], nn.parallel.DistributedDataParallel(model)
            no_sync = forward.no_sync
        loss = contrastive_step(forward, ClipLoss(gather=True), images, tokens,
                                micro_batch_size=2, no_sync=no_sync)  # fmt: skip
        fsdp.average_gradients(replicated)
        results[strategy] = {"loss": loss, "grads": full_grads(model)}
    if rank == 0:
        torch.save(results, out_path)
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    if argv[0] == "--grads":
        gradients(argv[1], argv[2])
    else:
        train(load_config(argv[0], argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
    # Gloo's C++ worker threads can abort the interpreter's teardown (see
    # dist_loss_worker.py); the run is complete and the group destroyed, so skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
