"""The training engine: GradCache, crash-safe resume, NaN guard, LiT, optimizer, configs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.data.loader import StepBatchSampler, collate_skip_bad
from clipforge.losses import ClipLoss, SigLipLoss
from clipforge.train import (
    ConfigError,
    ModelConfig,
    NonFiniteLossError,
    config_from_dict,
    load_config,
    load_latest,
    train,
)
from clipforge.train.gradcache import ContrastiveModel, contrastive_loss, contrastive_step
from clipforge.train.loop import build_model
from clipforge.train.optim import WarmupCosine, build_optimizer, lock_tower, param_groups

TINY = {
    "embed_dim": 64,
    "vision": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 128, "layers": 4,
               "heads": 4},
    "text": {"context_length": 32, "width": 128, "heads": 4, "layers": 4},
}  # fmt: skip
BASE = {
    "model": {"architecture": TINY},
    "data": {"kind": "procedural", "image_size": 32, "options": {"size": 4096, "difficulty": "easy"}},
    "optim": {"lr": 1e-3, "warmup_steps": 3, "weight_decay": 0.1},
    "batch_size": 16,
    "steps": 6,
    "log_every": 1,
    "checkpoint_every": 100,
    "progress": False,
    "tensorboard": False,
}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """One intra-op thread: faster on a shared 2-core box, and identical numerics in the
    resume test's subprocess (which gets OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_cfg(out: Path, *overrides: str, **top: object):
    return config_from_dict({**BASE, "output_dir": str(out), **top}, overrides)


def tiny_model(seed: int = 0, patch_dropout: float = 0.0) -> ContrastiveModel:
    torch.manual_seed(seed)
    clip = build_model(ModelConfig(architecture=TINY))
    clip.visual.patch_dropout = patch_dropout
    return ContrastiveModel(clip).train()


def sample_batch(model: ContrastiveModel, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    words = ["red", "green", "blue", "circle", "square", "two", "small", "left of", "a"]
    captions = [" ".join(words[i % 9 : i % 9 + 1 + i % 5]) for i in range(n)]  # varied lengths
    return torch.randn(n, 3, 32, 32, generator=gen), model.clip.tokenize(captions)


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys() and len(a) > 10
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst
    assert any(v.abs().max() > 0 for v in a.values())


# ----------------------------------------------------------------------------- GradCache
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_gradcache_matches_full_batch_gradients(kind):
    model = tiny_model()
    if kind == "siglip":
        model.logit_bias = torch.nn.Parameter(torch.tensor(-10.0))
    loss_fn = ClipLoss() if kind == "clip" else SigLipLoss()
    images, tokens = sample_batch(model)
    full_loss = contrastive_step(model, loss_fn, images, tokens)
    full = grads(model)
    model.zero_grad(set_to_none=True)
    cached_loss = contrastive_step(model, loss_fn, images, tokens, micro_batch_size=4)
    assert abs(full_loss.item() - cached_loss.item()) <= 1e-5
    assert_same_grads(grads(model), full)
    assert "clip.logit_scale" in full and ("logit_bias" in full) == (kind == "siglip")


def test_gradcache_replays_patch_dropout_rng():
    """With patch dropout, GradCache equals one graph over the same per-micro-batch masks:
    only possible if phase 3 replays the RNG state phase 1 used for each micro-batch."""
    model, loss_fn = tiny_model(patch_dropout=0.5), ClipLoss()
    images, tokens = sample_batch(model)
    torch.manual_seed(123)
    outs = [model(i, t) for i, t in zip(images.split(4), tokens.split(4), strict=True)]
    cat = [torch.cat([o[j] for o in outs]) for j in range(2)]
    contrastive_loss(loss_fn, *cat, outs[0][2], None).backward()
    reference = grads(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    contrastive_step(model, loss_fn, images, tokens, micro_batch_size=4)
    assert_same_grads(grads(model), reference)


# ----------------------------------------------------------------------------- resume
RUNNER = """
import sys, time
import clipforge.train.loop as loop
from clipforge.cli.train import main

_save = loop.save_checkpoint

def save_then_stall(*args, **kwargs):
    path = _save(*args, **kwargs)
    if path.name == "step_8":
        time.sleep(600)  # the test SIGKILLs us here
    return path

loop.save_checkpoint = save_then_stall
main(sys.argv[1:])
"""


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # a killed subprocess and a resumed run: end to end
def test_resume_after_sigkill_continues_the_same_trajectory(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**BASE, "patch_dropout": 0.25, "micro_batch_size": 8}))
    common = ["steps=12", "checkpoint_every=4"]
    killed = tmp_path / "killed"
    script = tmp_path / "runner.py"
    script.write_text(textwrap.dedent(RUNNER))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(config), *common, f"output_dir={killed}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 100
    try:
        while (
            not (killed / "latest").is_file() or (killed / "latest").read_text().strip() != "step_8"
        ):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no step_8 checkpoint in time"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (killed / "step_12").exists()
    assert load_latest(killed).step == 8

    resumed = train(load_config(config, [*common, f"output_dir={killed}", "resume=latest"]))
    reference = train(load_config(config, [*common, f"output_dir={tmp_path / 'ref'}"]))
    assert sorted(resumed.losses) == [9, 10, 11, 12]
    for step in range(9, 13):
        assert abs(resumed.losses[step] - reference.losses[step]) <= 1e-6, step
    logged = [r for r in _jsonl(killed / "metrics.jsonl") if r["event"] == "train"]
    assert [r["step"] for r in logged] == list(range(1, 13))  # rewound, no duplicates
    for record in logged:  # the killed subprocess followed the same trajectory too
        assert abs(record["loss"] - reference.losses[record["step"]]) <= 1e-6


# ----------------------------------------------------------------------------- NaN guard
def test_non_finite_loss_stops_without_stepping_or_saving(tmp_path, monkeypatch):
    import clipforge.train.loop as loop

    class NanAtThirdCall(ClipLoss):
        calls = 0

        def forward(self, *args):
            NanAtThirdCall.calls += 1
            loss = super().forward(*args)
            return loss * float("nan") if NanAtThirdCall.calls == 3 else loss

    monkeypatch.setattr(loop, "_make_loss", lambda cfg: NanAtThirdCall())
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"at step 3\b") as info:
        train(make_cfg(out, checkpoint_every=2))
    assert info.value.step == 3 and info.value.last_checkpoint == out / "step_2"
    assert str(out / "step_2") in str(info.value)
    assert sorted(p.name for p in out.glob("step_*")) == ["step_2"]
    assert (out / "latest").read_text().strip() == "step_2"
    ckpt = load_latest(out)
    assert ckpt.step == 2 and ckpt.state["data"]["samples_seen"] == 32
    model = clipforge.load(out / "step_2")
    images, tokens = sample_batch(tiny_model())
    with torch.no_grad():
        assert torch.isfinite(model(images, tokens)[0]).all()
    events = _jsonl(out / "metrics.jsonl")
    assert events[-1] == {"event": "error", "step": 3, "loss": "nan"}


# ----------------------------------------------------------------------------- LiT
def test_lit_locks_image_tower_except_last_blocks(tmp_path):
    model = tiny_model().clip
    lock_tower(model.visual, 1)
    trainable = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("transformer.resblocks.3.", "ln_post", "proj")) for n in trainable
    )
    assert all(p.requires_grad for p in model.text.parameters())

    cfg = make_cfg(tmp_path / "lit", steps=3, lock_image=True, unlocked_last_n_layers=1)
    before = tiny_model().clip.state_dict()
    train(cfg)
    after = clipforge.load(tmp_path / "lit" / "step_3").state_dict()
    for name, value in before.items():
        unlocked = name.startswith(
            ("visual.transformer.resblocks.3.", "visual.ln_post", "visual.proj")
        )
        frozen = name.startswith("visual.") and not unlocked
        assert torch.equal(value, after[name]) == frozen, name


# ----------------------------------------------------------------------------- optimizer
def test_weight_decay_groups_and_schedule():
    model = tiny_model()
    model.logit_bias = torch.nn.Parameter(torch.tensor(-10.0))
    groups = {g["group"]: set(g["names"]) for g in param_groups(model, 0.2)}
    no_decay, decay = groups["no_decay"], groups["decay"]
    params = dict(model.named_parameters())
    assert no_decay.isdisjoint(decay) and no_decay | decay == set(params)
    for name in ("clip.logit_scale", "logit_bias", "clip.visual.class_embedding",
                 "clip.visual.ln_pre.weight", "clip.text.transformer.resblocks.0.attn.in_proj_bias",
                 "clip.text.transformer.resblocks.0.mlp.c_fc.bias"):  # fmt: skip
        assert name in no_decay, name
    for name in ("clip.visual.conv1.weight", "clip.visual.proj", "clip.text.token_embedding.weight",
                 "clip.text.positional_embedding", "clip.text.transformer.resblocks.0.attn.in_proj_weight"):  # fmt: skip
        assert name in decay, name
    assert all(params[n].ndim >= 2 for n in decay)
    optimizer = build_optimizer(model, make_cfg(Path("unused")).optim)
    assert {g["group"]: g["weight_decay"] for g in optimizer.param_groups} == {
        "decay": 0.1,
        "no_decay": 0.0,
    }
    schedule = WarmupCosine(warmup_steps=4, total_steps=14)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(9) == pytest.approx(0.5) and schedule(14) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- learning
def test_loss_goes_down_on_procedural_data(tmp_path):
    overrides = ["optim.lr=5e-4", "optim.warmup_steps=10", "optim.schedule=constant"]
    cfg = make_cfg(tmp_path / "learn", *overrides, steps=40, batch_size=32, eval_every=40,
                   checkpoint_every=40, tensorboard=True)  # fmt: skip
    result = train(cfg)
    losses = [result.losses[s] for s in range(1, 41)]
    assert all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.3 and last < math.log(32) - 0.2, (first, last)  # below chance
    assert 0.0 <= result.metrics["zeroshot_test_acc"] <= 1.0
    records = _jsonl(tmp_path / "learn" / "metrics.jsonl")
    assert {"loss", "lr", "logit_scale", "samples_per_s", "skipped"} <= records[0].keys()
    assert records[-1]["event"] == "eval" and "zeroshot_val_acc" in records[-1]
    # TensorBoard got the same scalars as metrics.jsonl
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "learn" / "tensorboard")).Reload()
    assert {"train/loss", "train/lr", "eval/zeroshot_val_acc"} <= set(events.Tags()["scalars"])
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    assert logged.keys() == set(range(1, 41))
    assert abs(logged[40] - result.losses[40]) < 1e-4


# ----------------------------------------------------------------------------- config
def test_config_errors_name_the_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {architecture: ViT-S-32}\noptim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"'optim\.lrr'.*did you mean 'lr'.*'weight_decay'"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"'stepz'"):
        make_cfg(tmp_path, "stepz=3")
    with pytest.raises(ConfigError, match=r"'optim\.lr'.*a number"):
        make_cfg(tmp_path, "optim.lr=fast")
    with pytest.raises(ConfigError, match=r"'precision'.*'fp32'"):
        make_cfg(tmp_path, "precision=fp8")
    with pytest.raises(ConfigError, match=r"'steps' has no sub-keys"):
        make_cfg(tmp_path, "steps.x=1")
    cfg = make_cfg(tmp_path, "optim.lr=1e-3", "optim.betas=0.9,0.95", "compile=yes",
                   "micro_batch_size=null", "data.options.size=7", "model.architecture.embed_dim=32")  # fmt: skip
    assert cfg.optim.lr == 0.001 and cfg.optim.betas == (0.9, 0.95) and cfg.compile is True
    assert cfg.micro_batch_size is None and cfg.data.options == {"size": 7, "difficulty": "easy"}
    assert cfg.model.architecture["embed_dim"] == 32


# ----------------------------------------------------------------------------- data
def test_sampler_resumes_by_index_arithmetic_and_collate_skips_bad():
    full = StepBatchSampler(10, 4, seed=3)
    it = iter(full)
    stream = [next(it) for _ in range(6)]  # crosses epoch boundaries
    resumed = iter(StepBatchSampler(10, 4, seed=3, start_step=4))
    assert [next(resumed), next(resumed)] == stream[4:6]
    assert sorted(sum(stream[:5], [])[:10]) == list(range(10))  # epoch 0 is a permutation
    ranks = [StepBatchSampler(10, 4, seed=3, rank=r, world_size=2).indices(1) for r in (0, 1)]
    assert ranks[0] + ranks[1] == stream[1]
    item = (torch.zeros(3, 2, 2), torch.arange(5))
    images, tokens, skipped = collate_skip_bad([item, None, item])
    assert images.shape == (2, 3, 2, 2) and tokens.shape == (2, 5) and skipped == 1
