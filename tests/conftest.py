"""Shared fixtures: paths to ../shared, deterministic weight perturbation, sample inputs."""

from __future__ import annotations

import atexit
import contextlib
import copy
import fcntl
import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

# torch is imported inside the helpers, not here: this module also loads in pytest-xdist's
# controller, which runs no test; without torch (~1.2 s) it starts the workers that much
# sooner.

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Bytecode caching on for the test session. Under PYTHONDONTWRITEBYTECODE=1 (set in some
# containers) every xdist worker recompiled clipforge's sources and re-rewrote the asserts
# of every test module (~4 s of each worker's collection), and so did every interpreter a
# test starts (CLI, crash, rlimit and offline checks). This module loads before xdist
# spawns its workers, so they and the subprocesses inherit the environment without it;
# the caches are the usual __pycache__ folders (.gitignore) and .pyc files are never read
# from anywhere else.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """One torch thread for the whole session: the tests' tensors are too small to gain from
    a second, and on a shared machine a second thread spins waiting for a busy core (the
    fast tier ran 2-4x slower under load). Slow tests get the default back
    (``_every_thread_for_slow_tests``): full-size models gain from the second core.
    Yields torch's default thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield threads
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _every_thread_for_slow_tests(request, _one_intra_op_thread):
    """Slow-tier tests (full-size models, the full demo) run with torch's default threads."""
    if request.node.get_closest_marker("slow") is None:
        yield
        return
    import torch

    torch.set_num_threads(_one_intra_op_thread)
    yield
    torch.set_num_threads(1)


def shared_path(*parts: str) -> Path:
    """A path under ../shared; fail loudly (never skip) if the data is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"required test data is missing: {path} (CI provides ../shared beside the repo)"
        )
    return path


def perturb_(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Randomise every parameter and BatchNorm statistic so that no branch is a no-op.

    Default inits zero biases and the last BatchNorm gain of each ResNet block; a parity
    test on such weights would not exercise those paths.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.02)
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
    return model


def sample_tokens(context_length: int = 77, vocab_size: int = 49408) -> torch.Tensor:
    """Token ids shaped like CLIP's: SOT, words, EOT (the largest id), zero padding."""
    import torch

    gen = torch.Generator().manual_seed(7)
    lengths = [1, 5, min(17, context_length - 3), context_length - 2]
    tokens = torch.zeros(len(lengths), context_length, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens[row, 0] = vocab_size - 2
        tokens[row, 1 : n + 1] = torch.randint(1, vocab_size - 2, (n,), generator=gen)
        tokens[row, n + 1] = vocab_size - 1
    return tokens


def sample_images(size: int, n: int = 2) -> torch.Tensor:
    import torch

    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def tiny_vit_config():
    """A tiny ViT CLIP config (32-px images, 2+2 layers, CLIP's 77-token context)."""
    from clipforge.configs import ClipConfig, TextConfig, ViTConfig

    return ClipConfig(
        embed_dim=32,
        vision=ViTConfig(image_size=32, patch_size=8, width=64, layers=2, heads=2),
        text=TextConfig(width=64, heads=2, layers=2),
    )


def tiny_model():
    """A seeded, tiny random ViT CLIP (32-px images, 2+2 layers) for fast API tests."""
    import torch

    import clipforge

    torch.manual_seed(0)
    return clipforge.create_model(tiny_vit_config()).eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def open_clip_tiny_twin(name: str) -> dict:
    """open_clip's config of ``name`` with the sizes shrunk and everything else kept.

    Activation, patch size, ResNet stage depths, context length and vocabulary stay as in
    the full-size model; widths, depths and the image (3x3 patches, or 2x2 ResNet cells)
    shrink, so a parity test on the twin runs every code path of the variant in milliseconds.
    """
    import open_clip  # only the parity tests need it

    cfg = copy.deepcopy(open_clip.get_model_config(name))
    vision = cfg["vision_cfg"]
    if isinstance(vision["layers"], list):  # ModifiedResNet: same stage depths, thin stages
        vision.update(image_size=64, width=8, head_width=16)
    else:
        vision.update(image_size=3 * vision["patch_size"], layers=2, width=64, head_width=32)
    cfg["text_cfg"].update(width=64, heads=2, layers=2)
    cfg["embed_dim"] = 32
    return cfg


#: one architecture per family runs in the fast tier; the others in the slow tier
FAST_ARCHITECTURES = frozenset(
    {"ViT-B-32", "RN50", "ViT-B-16-SigLIP", "ViT-B-16-SigLIP2", "ViT-SO400M-14-SigLIP-384",
     "EVA02-B-16", "EVA02-E-14"}
)  # fmt: skip


def tiered(names) -> list:
    """``names`` as parameters: family representatives fast, every other one ``slow``."""
    return [
        n if n in FAST_ARCHITECTURES else pytest.param(n, marks=pytest.mark.slow, id=n)
        for n in names
    ]


def fake_hub_snapshot(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in a huggingface_hub cache laid out exactly as
    ``hf_hub_download`` leaves it (created once; write the repo's files into it)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def run_offline(script: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter with HF_HUB_OFFLINE=1 (read at import time)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=REPO,
        timeout=300,
    )  # fmt: skip


# The garbage collector, tuned for a suite that builds thousands of models: with Python's
# default thresholds (700, 10, 10) it ran ~6,300 collections in a 78 s single-process run of
# tests/checkpoints, tests/models and tests/index, 3.3 s of it; at (20000, 20, 20) 116
# collections, 0.9 s, and the run took 75 s (75.1 vs 78.4).
gc.set_threshold(20_000, 20, 20)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move everything imported and collected so far (torch, open_clip, transformers, the
    test modules: millions of objects) out of the garbage collector's view: they live for the
    whole session, and every full collection during the tests would walk them again."""
    gc.freeze()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """An xdist worker ends here, once it has reported its last result: exit handlers run
    (servers stopped, files closed), Python's interpreter teardown does not. Freeing
    torch, transformers, open_clip and the tests' objects one by one took each worker
    ~1 s, which the controller waited for at the end of every run."""
    if not hasattr(config, "workerinput"):
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Under pytest-xdist a test marked ``alone`` runs with no other test beside it: it
    waits for the other workers' tests in flight, and they start none until it is done.
    Its latency limits then measure the code under test, not an unrelated test on the
    same cores. Every other test shares the machine as usual."""
    with _machine_share(item.config, exclusive=item.get_closest_marker("alone") is not None):
        return (yield)


@contextlib.contextmanager
def _machine_share(config: pytest.Config, exclusive: bool) -> Iterator[None]:
    if not hasattr(config, "workerinput"):  # one process: nothing runs beside the test
        yield
        return
    # the run's directory (popen-gw0, popen-gw1, ... are its children): one file per run
    run_dir = config._tmp_path_factory.getbasetemp().parent  # type: ignore[attr-defined]
    with open(run_dir / "machine.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
