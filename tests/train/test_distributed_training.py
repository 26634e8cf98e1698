"""Training across processes: two torchrun launchers (c10d rendezvous, like two nodes) and
FSDP against DDP, all on loopback with gloo on CPU.

Every run here is a few steps of the tiny ViT of ``test_train.py``; each launcher is bounded
by a timeout and killed (with its workers) if it overruns.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.losses import ClipLoss
from clipforge.train import ModelConfig, config_from_dict, train
from clipforge.train.gradcache import contrastive_step
from clipforge.train.loop import build_model

from ..conftest import REPO
from .test_train import BASE

WORKER = REPO / "tests" / "dist_train_worker.py"
TIMEOUT_S = 240
# lr 1e-4: Adam turns float round-off in near-zero gradients into steps of up to ~lr, so the
# weight comparison's precision scales with lr (the losses match to 1e-5 at any lr).
RUN = {**BASE, "optim": {**BASE["optim"], "lr": 1e-4}, "steps": 3, "batch_size": 8,
       "device": "cpu", "checkpoint_every": 100}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_env() -> dict[str, str]:
    """Loopback only, one thread per process, the worktree's package first on the path."""
    path = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": path}  # fmt: skip


def launch_all(commands: list[list[str]]) -> list[tuple[int, str]]:
    """Start every launcher, wait for all (bounded), kill the process groups that overrun."""
    procs = [
        subprocess.Popen(cmd, env=worker_env(), cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
        for cmd in commands
    ]  # fmt: skip
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
            results.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return results


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def run_config(tmp_path: Path, name: str, **overrides: object) -> tuple[Path, Path]:
    """A config file for the workers, and the run's output directory."""
    out = tmp_path / name
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({**RUN, **overrides, "output_dir": str(out)}))
    return config, out


def logged_losses(out: Path) -> dict[int, float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return {r["step"]: r["loss"] for r in records if r["event"] == "train"}


def final_weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return clipforge.load(out / f"step_{step}").state_dict()


def max_weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and len(a) > 10
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def initial_weights() -> dict[str, torch.Tensor]:
    """The weights every run starts from (``train`` seeds, then builds the model)."""
    torch.manual_seed(0)  # TrainConfig.seed default
    return build_model(ModelConfig(architecture=RUN["model"]["architecture"])).state_dict()


def single_process(tmp_path: Path, **overrides: object):
    """The reference: one process on the global batch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = {**RUN, **overrides, "output_dir": str(tmp_path / "single")}
        result = train(config_from_dict(cfg))
    finally:
        torch.set_num_threads(threads)
    return result, final_weights(tmp_path / "single", RUN["steps"])


@pytest.mark.slow  # torchrun process groups: end to end
def test_two_node_torchrun_matches_single_process(tmp_path):
    """Two launchers, one process each, meeting through a c10d rendezvous on loopback."""
    config, out = run_config(tmp_path, "two_nodes")
    port = free_port()
    common = ["--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
              f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=clipforge-test",
              "--local_addr=127.0.0.1", "--max_restarts=0"]  # fmt: skip
    commands = [
        torchrun(*common, f"--rdzv_conf=is_host={int(host)},join_timeout=120", str(WORKER),
                 str(config))
        for host in (True, False)
    ]  # fmt: skip
    for code, log in launch_all(commands):
        assert code == 0, log[-4000:]
    reference, ref_weights = single_process(tmp_path)
    losses = logged_losses(out)
    assert sorted(losses) == [1, 2, 3] == sorted(reference.losses)
    for step, loss in losses.items():
        assert abs(loss - reference.losses[step]) <= 1e-5, (step, loss, reference.losses[step])
    assert losses[3] != losses[1]  # the model did train
    weights = final_weights(out, RUN["steps"])
    assert max_weight_diff(weights, ref_weights) <= 1e-5
    assert max_weight_diff(weights, initial_weights()) > 1e-4  # and the weights moved


# ----------------------------------------------------------------------------- FSDP
# constant schedule: a 2-step run and a 4-step run share their first steps' learning rates
FSDP_RUN = {"optim": {**RUN["optim"], "schedule": "constant", "grad_clip_norm": 0.5},
            "steps": 4, "checkpoint_every": 2}  # fmt: skip


def two_procs(*args: str) -> list[str]:
    rdzv = ["--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    return torchrun(*rdzv, str(WORKER), *args)


@pytest.mark.slow  # torchrun process groups: end to end
def test_fsdp_gradients_match_ddp_and_one_process(tmp_path):
    """One step (GradCache micro-batches of 2) under FSDP and DDP, against one process."""
    from .. import dist_train_worker as worker

    config, _ = run_config(tmp_path, "grads")
    out = tmp_path / "grads.pt"
    [(code, log)] = launch_all([two_procs("--grads", str(config), str(out))])
    assert code == 0, log[-4000:]
    results = torch.load(out)
    model = worker.tiny_model(RUN["model"]["architecture"])
    images, tokens = worker.grad_batch(model)
    loss = contrastive_step(model, ClipLoss(), images, tokens)
    reference = {n: p.grad for n, p in model.named_parameters()}
    for strategy in ("ddp", "fsdp"):
        assert abs(results[strategy]["loss"].item() - loss.item()) <= 1e-5, strategy
        assert max_weight_diff(results[strategy]["grads"], reference) <= 1e-5, strategy
    assert max_weight_diff(results["fsdp"]["grads"], results["ddp"]["grads"]) <= 1e-5
    assert min(g.abs().max().item() for g in reference.values()) > 0  # real gradients


@pytest.mark.slow  # torchrun process groups: end to end
def test_fsdp_trains_like_ddp_and_resumes_from_sharded_checkpoints(tmp_path):
    """DDP for 4 steps; FSDP for 2, then resumed from its sharded step_2 for 2 more."""
    ddp_config, ddp_out = run_config(tmp_path, "ddp", **FSDP_RUN)
    config, out = run_config(tmp_path, "fsdp", **FSDP_RUN, strategy="fsdp")
    [(code, log)] = launch_all([two_procs(str(ddp_config))])
    assert code == 0, log[-4000:]
    [(code, log)] = launch_all([two_procs(str(config), "steps=2")])
    assert code == 0, log[-4000:]
    sharded = out / "step_2" / "sharded"
    assert (sharded / ".metadata").is_file() and len(list(sharded.glob("*.distcp"))) == 2
    assert torch.load(out / "step_2" / "state.pt")["optimizer"] is None  # it is in the shards
    [(code, log)] = launch_all([two_procs(str(config), "resume=latest")])
    assert code == 0, log[-4000:]
    losses, ddp_losses = logged_losses(out), logged_losses(ddp_out)
    assert sorted(losses) == sorted(ddp_losses) == [1, 2, 3, 4]
    for step, loss in ddp_losses.items():
        assert abs(losses[step] - loss) <= 1e-5, (step, losses[step], loss)
    weights = final_weights(out, 4)
    assert max_weight_diff(weights, final_weights(ddp_out, 4)) <= 1e-5
    assert max_weight_diff(weights, final_weights(out, 2)) > 1e-5  # steps 3-4 did train


def test_slurm_example_is_valid_bash_and_launches_the_tested_torchrun():
    """The SLURM example parses, and launches what the two-node test runs (c10d, train)."""
    script = REPO / "examples" / "slurm_train_multinode.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    for flag in ("--rdzv_backend=c10d", "--rdzv_endpoint=", "--nnodes=", "--nproc_per_node="):
        assert flag in text, flag
    assert "-m clipforge.cli.train" in text
