"""Worker for the distributed loss test (run under ``torch.distributed.run``, gloo).

Each rank encodes its half of a fixed global batch with a tiny linear "encoder", computes
the loss, back-propagates and all-reduce-averages the parameter gradients (what DDP does).
Rank 0 saves the per-rank losses and averaged gradients to ``argv[1]``. The test imports
``build_inputs`` / ``run_case`` to compute the single-process reference on the global batch.
"""

from __future__ import annotations

import math
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from clipforge.losses import ClipLoss, SigLipLoss

GLOBAL_BATCH = 8
IMG_DIM, TXT_DIM, EMBED_DIM = 6, 5, 4
CASES = ("clip_global", "clip_local", "siglip")


class TinyEncoder(nn.Module):
    """Two linear towers plus a learnable temperature and bias."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.image = nn.Linear(IMG_DIM, EMBED_DIM)
        self.text = nn.Linear(TXT_DIM, EMBED_DIM)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.tensor(-2.0))

    def forward(self, x_img: torch.Tensor, x_txt: torch.Tensor):
        img = F.normalize(self.image(x_img), dim=-1)
        txt = F.normalize(self.text(x_txt), dim=-1)
        return img, txt, self.logit_scale.exp(), self.logit_bias


def build_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return (
        torch.randn(GLOBAL_BATCH, IMG_DIM, generator=gen),
        torch.randn(GLOBAL_BATCH, TXT_DIM, generator=gen),
    )


def run_case(
    case: str, x_img: torch.Tensor, x_txt: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and raw (un-reduced) parameter gradients for one case on the given inputs."""
    model = TinyEncoder()
    img, txt, scale, bias = model(x_img, x_txt)
    if case == "siglip":
        loss = SigLipLoss()(img, txt, scale, bias)
    else:
        loss = ClipLoss(local_loss=case == "clip_local")(img, txt, scale)
    loss.backward()
    grads = {
        name: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        for name, p in model.named_parameters()
    }
    return loss.detach(), grads


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert GLOBAL_BATCH % world == 0
    n = GLOBAL_BATCH // world
    x_img, x_txt = build_inputs()
    x_img, x_txt = x_img[rank * n : (rank + 1) * n], x_txt[rank * n : (rank + 1) * n]
    results = {}
    for case in CASES:
        loss, grads = run_case(case, x_img, x_txt)
        losses = [torch.zeros_like(loss) for _ in range(world)]
        dist.all_gather(losses, loss)
        for grad in grads.values():
            dist.all_reduce(grad)
            grad /= world
        results[case] = {"losses": torch.stack(losses), "grads": grads}
    if rank == 0:
        torch.save(results, out_path)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    # Gloo's C++ worker threads can abort the interpreter's teardown ("terminate called
    # without an active exception", SIGABRT, flaky under CPU load; a known torch issue).
    # Everything is written and the group destroyed, so skip the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
