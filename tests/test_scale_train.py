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

import torch

import clipforge
from clipforge.train import ModelConfig, config_from_dict, train
from clipforge.train.loop import build_model

from .conftest import REPO
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
