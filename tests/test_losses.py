"""ClipLoss / SigLipLoss: parity with open_clip and single-process equality under gloo DDP."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss, SigLipLoss as OpenSigLipLoss
from torch import nn

from clipforge.losses import (
    SIGLIP_INIT_BIAS,
    SIGLIP_INIT_SCALE,
    ClipLoss,
    SigLipLoss,
    clamp_logit_scale_,
)

from . import dist_loss_worker as worker
from .conftest import REPO, max_diff


def _inputs(n: int = 8, dim: int = 16, seed: int = 0):
    """Leaf normalised features and a raw log-scale / bias, all requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, dim, generator=gen), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(n, dim, generator=gen), dim=-1).requires_grad_()
    raw_scale = torch.tensor(math.log(1 / 0.07) + 0.3 * torch.rand(1, generator=gen).item())
    bias = torch.tensor(-3.0 + torch.rand(1, generator=gen).item())
    return img, txt, raw_scale.requires_grad_(), bias.requires_grad_()


def _loss_and_grads(loss_fn, with_bias: bool, seed: int):
    img, txt, raw_scale, bias = _inputs(seed=seed)
    args = (img, txt, raw_scale.exp()) + ((bias,) if with_bias else ())
    loss = loss_fn(*args)
    loss.backward()
    grads = [img.grad, txt.grad, raw_scale.grad] + ([bias.grad] if with_bias else [])
    return loss.detach(), grads


@pytest.mark.parametrize("local_loss", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_clip_loss_matches_open_clip(local_loss: bool, seed: int) -> None:
    ours, ours_grads = _loss_and_grads(ClipLoss(local_loss=local_loss), False, seed)
    ref, ref_grads = _loss_and_grads(OpenClipLoss(local_loss=local_loss), False, seed)
    assert max_diff(ours, ref) <= 1e-6
    for a, b in zip(ours_grads, ref_grads, strict=True):
        assert max_diff(a, b) <= 1e-6


def test_clip_loss_perfect_match_is_small() -> None:
    feats = torch.eye(4)
    assert ClipLoss()(feats, feats, torch.tensor(100.0)).item() < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_siglip_loss_matches_open_clip(seed: int) -> None:
    ours, ours_grads = _loss_and_grads(SigLipLoss(), True, seed)
    ref, ref_grads = _loss_and_grads(OpenSigLipLoss(rank=0, world_size=1), True, seed)
    assert max_diff(ours, ref) <= 1e-6
    for a, b in zip(ours_grads, ref_grads, strict=True):
        assert max_diff(a, b) <= 1e-6


def test_siglip_constants() -> None:
    assert math.exp(SIGLIP_INIT_SCALE) == pytest.approx(10.0)
    assert SIGLIP_INIT_BIAS == -10.0


def test_clamp_logit_scale() -> None:
    param = nn.Parameter(torch.tensor(7.0))
    clamp_logit_scale_(param)
    assert param.item() == pytest.approx(math.log(100))
    param.data.fill_(-1.0)
    clamp_logit_scale_(param)
    assert param.item() == 0.0

    wrapped = nn.Sequential(worker.TinyEncoder())  # name "0.logit_scale", like a wrapper
    wrapped[0].logit_scale.data.fill_(9.0)
    clamp_logit_scale_(wrapped)
    assert wrapped[0].logit_scale.item() == pytest.approx(math.log(100))
    assert wrapped[0].logit_bias.item() == -2.0  # untouched
    with pytest.raises(ValueError):
        clamp_logit_scale_(nn.Linear(2, 2))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # a torchrun process group: end to end
def test_distributed_two_ranks_match_single_process(tmp_path) -> None:
    out = tmp_path / "results.pt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(REPO / "tests" / "dist_loss_worker.py"),
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = torch.load(out)

    x_img, x_txt = worker.build_inputs()
    for case in worker.CASES:
        ref_loss, ref_grads = worker.run_case(case, x_img, x_txt)
        losses = results[case]["losses"]
        assert max_diff(losses.mean(), ref_loss) <= 1e-5, case
        if case == "clip_global":  # every rank computes the whole global loss
            assert max_diff(losses, ref_loss.expand_as(losses)) <= 1e-5
        grads = results[case]["grads"]
        assert grads.keys() == ref_grads.keys()
        for name, ref in ref_grads.items():
            assert max_diff(grads[name], ref) <= 1e-5, (case, name)
            if not (case != "siglip" and name == "logit_bias"):
                assert ref.abs().max() > 0, (case, name)  # a real gradient was compared
