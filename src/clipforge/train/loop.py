"""The training loop: ``train(cfg) -> TrainResult``.

Single process or ``torchrun`` (``WORLD_SIZE > 1``: NCCL on CUDA, else gloo; DDP, or FSDP2
with ``strategy: fsdp`` (:mod:`.fsdp`); losses gather features across ranks). Steps are numbered from 1; checkpoint ``step_N`` holds the
state after N optimizer steps, and ``resume="latest"`` continues the same trajectory: same
data order, RNG states, optimizer, scheduler and scaler, hence the same losses.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from ..data.loader import build_train_loader
from ..errors import UsageError
from ..eval.registry import evaluate
from ..lora import has_lora, merged_state_dict
from ..losses import (
    SIGLIP_INIT_BIAS,
    SIGLIP_INIT_SCALE,
    ClipLoss,
    CoCaLoss,
    SigLipLoss,
    clamp_logit_scale_,
)
from ..runtime import autocast
from . import fsdp
from .checkpoint import (
    Checkpoint,
    gather_rng,
    latest_path,
    load_checkpoint,
    load_latest,
    restore_rng,
    restore_training_state,
    rewind_metrics,
    save_checkpoint,
    training_state,
)
from .gradcache import ContrastiveModel, Forward, contrastive_step
from .model import build_model, loss_kind, prepare_model
from .optim import build_optimizer, build_scheduler
from .outdir import claim_output_dir
from .train_config import ConfigError, LossConfig, TrainConfig, config_to_dict

__all__ = ["METRICS_FILE", "NonFiniteLossError", "TrainResult", "build_model", "train"]

logger = logging.getLogger("clipforge.train")
METRICS_FILE = "metrics.jsonl"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; no optimizer step and no checkpoint were made for ``step``."""

    def __init__(self, step: int, loss: float, last_checkpoint: Path | None) -> None:
        self.step, self.loss, self.last_checkpoint = step, loss, last_checkpoint
        where = (
            f"last good checkpoint: {last_checkpoint}"
            if last_checkpoint
            else ("no checkpoint was written before it")
        )
        super().__init__(
            f"non-finite loss ({loss}) at step {step}; training stopped without taking this "
            f"step; {where}. Lower the learning rate, use bf16 instead of fp16, or resume "
            f"from the checkpoint."
        )


@dataclass
class TrainResult:
    """What a run produced: final metrics, the logged history and every step's loss."""

    step: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: dict[int, float] = field(default_factory=dict)
    output_dir: Path | None = None
    last_checkpoint: Path | None = None


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


# ----------------------------------------------------------------------------- setup
def _setup_distributed(cfg: TrainConfig) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (cfg.device is None or cfg.device.startswith("cuda"))
    device = torch.device(cfg.device or "cpu")
    if cuda:
        device = torch.device("cuda", local_rank if world > 1 else (device.index or 0))
        torch.cuda.set_device(device)
    if world <= 1:
        return _Dist(device=device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), device, owns)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _make_loss(cfg: LossConfig) -> nn.Module:
    """The loss of ``cfg`` (its ``kind`` resolved: see :func:`loss_kind`)."""
    if cfg.kind == "siglip":
        return SigLipLoss(gather=True)
    if cfg.kind == "coca":
        return CoCaLoss(cfg.caption_loss_weight, cfg.clip_loss_weight,
                        gather=True, local_loss=cfg.local_loss)  # fmt: skip
    return ClipLoss(gather=True, local_loss=cfg.local_loss)


# ----------------------------------------------------------------------------- logging
class _Logger:
    """metrics.jsonl, optional TensorBoard and a progress bar (main rank only)."""

    def __init__(self, cfg: TrainConfig, start_step: int, enabled: bool) -> None:
        self.enabled, self.path = enabled, Path(cfg.output_dir) / METRICS_FILE
        self.history: list[dict[str, Any]] = []
        self.writer, self.bar = None, None
        if not enabled:
            return
        rewind_metrics(self.path, start_step)
        if cfg.tensorboard:
            try:
                self.writer = SummaryWriter(str(Path(cfg.output_dir) / "tensorboard"))
            except ImportError:
                logger.warning(
                    "TensorBoard logging is off: the 'tensorboard' package is not "
                    "installed (pip install tensorboard, or set tensorboard=false)"
                )
        if cfg.progress:
            self.bar = tqdm(total=cfg.steps, initial=start_step, unit="step", desc="train")

    def log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "event") and isinstance(value, int | float):
                    self.writer.add_scalar(f"{record['event']}/{key}", value, record["step"])

    def progress(self, loss: float, samples_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------- helpers
def _find_resume(cfg: TrainConfig) -> Checkpoint | None:
    if cfg.resume is None:
        if latest_path(cfg.output_dir) is not None:
            logger.warning(
                "%s has checkpoints; starting fresh (resume=latest continues)", cfg.output_dir
            )
        return None
    if cfg.resume == "latest":
        ckpt = load_latest(cfg.output_dir)
        if ckpt is None:
            logger.warning("resume=latest: no checkpoint in %s, starting fresh", cfg.output_dir)
        return ckpt
    return load_checkpoint(cfg.resume)


def _reduce(value: torch.Tensor | float, d: _Dist, op: str = "mean") -> float:
    """``value`` averaged (or min/max) over ranks, as a Python float."""
    t = torch.as_tensor(value, dtype=torch.float32).detach().reshape(1).to(d.device)
    if d.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "mean" else getattr(dist.ReduceOp, op))
        t = t / d.world_size if op == "mean" else t
    return float(t.item())


def _evaluations(cfg: TrainConfig) -> list[tuple[str, str, Any, Any]]:
    """``(metric-key prefix, evaluator, data, options)`` per evaluation ``eval_every`` runs.

    The config's ``eval`` list, keys ``<label or name>/<metric>``; without one, procedural
    data keeps its historical ``procedural_zeroshot`` scores (``zeroshot_test_acc``, ...)
    and other data is not evaluated.
    """
    if cfg.eval is not None:
        return [(f"{e.prefix}/", e.name, e.data, e.options) for e in cfg.eval]
    if cfg.data.kind != "procedural":
        return []
    options = {
        "image_size": cfg.data.image_size or 64,
        "n_per_class": cfg.eval_n_per_class,
        "seed": cfg.seed,
    }
    return [("", "procedural_zeroshot", None, options)]


# ----------------------------------------------------------------------------- train
def train(cfg: TrainConfig, overwrite: bool = False) -> TrainResult:
    """Train (or fine-tune) a CLIP model as ``cfg`` describes; see the module docstring.

    ``cfg.output_dir`` is locked for the run; a non-empty one is refused unless
    ``cfg.resume`` is set or ``overwrite`` (which removes the previous run's files) is true
    (:class:`~clipforge.train.outdir.OutputDirError`).
    """
    main = int(os.environ.get("RANK", "0")) == 0
    with claim_output_dir(cfg.output_dir, cfg.resume, overwrite=overwrite, main=main):
        d = _setup_distributed(cfg)
        try:
            return _Trainer(cfg, d).run()
        finally:
            if d.owns_group and dist.is_initialized():
                dist.destroy_process_group()


class _Trainer:
    """The state of one run; ``run()`` executes the remaining steps."""

    def __init__(self, cfg: TrainConfig, d: _Dist) -> None:
        if cfg.batch_size % d.world_size:
            raise UsageError(f"batch_size {cfg.batch_size} not divisible by {d.world_size} ranks")
        self.cfg, self.d = cfg, d
        _seed_all(cfg.seed)
        self.clip = build_model(cfg.model)
        self.loss_kind = loss_kind(cfg.loss, self.clip)
        siglip = self.loss_kind == "siglip"
        if siglip and cfg.model.init_from is None and cfg.model.pretrained is None:
            self.clip.logit_scale.data.fill_(SIGLIP_INIT_SCALE)
        prepare_model(self.clip, cfg)
        captions = self.loss_kind == "coca"
        self.model = ContrastiveModel(self.clip, SIGLIP_INIT_BIAS if siglip else None, captions)
        self.model.to(d.device).train()
        self.fsdp = cfg.strategy == "fsdp" and d.world_size > 1
        if self.fsdp and cfg.eval_every:
            raise UsageError("strategy=fsdp does not evaluate during training (eval_every=0); "
                             "evaluate the saved step_N checkpoints instead")  # fmt: skip
        self.replicated = fsdp.shard(self.model, self.clip) if self.fsdp else []
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.steps)
        self.scaler = torch.amp.GradScaler(d.device.type, enabled=cfg.precision == "fp16")
        ckpt = _find_resume(cfg)
        if ckpt is not None:
            restore = fsdp.restore_sharded if self.fsdp else restore_training_state
            restore(ckpt, self.model, self.optimizer, self.scheduler, self.scaler)
        self.start = ckpt.step if ckpt is not None else 0
        self.last_ckpt = ckpt.path if ckpt is not None else None
        self.forward, self.no_sync = self._wrap()
        self.batches = build_train_loader(
            cfg.data, self.clip, batch_size=cfg.batch_size, seed=cfg.seed, rank=d.rank,
            world_size=d.world_size, start_step=self.start,
        )  # fmt: skip
        if ckpt is not None:  # after everything that may draw random numbers
            rngs = ckpt.state["rng"]
            restore_rng(rngs[d.rank] if d.rank < len(rngs) else rngs[0])
        else:
            _seed_all(cfg.seed + d.rank)
        local = cfg.batch_size // d.world_size
        self.micro = cfg.micro_batch_size if (cfg.micro_batch_size or local) < local else None
        if captions and self.micro is not None:
            raise ConfigError("loss.kind=coca does not support micro_batch_size (GradCache) yet")
        self.loss_fn = _make_loss(replace(cfg.loss, kind=self.loss_kind))
        if isinstance(self.loss_fn, CoCaLoss):  # the decoder's padding id (open_clip's: 0)
            self.loss_fn.pad_id = int(getattr(self.clip, "pad_id", 0))
        self.autocast = partial(autocast, cfg.precision, d.device)
        self.losses: dict[int, float] = {}
        self.parts: dict[int, dict[str, float]] = {}  # CoCa: the two weighted loss terms
        self.metrics: dict[str, Any] = {}
        self.window = [time.perf_counter(), 0, 0]  # [start time, samples, skipped]

    def _wrap(self) -> tuple[Forward, Any]:
        forward: Forward = self.model
        no_sync = None
        if self.fsdp:
            sharded = cast("fsdp.FSDPModule", self.model)  # fully_shard made it one
            no_sync = partial(fsdp.no_sync, sharded)
        elif self.d.world_size > 1:
            ids = [self.d.device.index] if self.d.device.type == "cuda" else None
            forward = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            no_sync = forward.no_sync
        if self.cfg.compile:
            forward = torch.compile(forward)
        return forward, no_sync

    def run(self) -> TrainResult:
        cfg, out = self.cfg, Path(self.cfg.output_dir)
        if self.d.main:
            out.mkdir(parents=True, exist_ok=True)
            text = json.dumps(config_to_dict(cfg), indent=2)
            (out / "train_config.json").write_text(text, "utf-8")
        self.log = _Logger(cfg, self.start, enabled=self.d.main)
        try:
            for step in range(self.start + 1, cfg.steps + 1):
                self._step(step)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    self._log(step)
                if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                    self._eval(step)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self._save(step)
        except NonFiniteLossError as err:
            self.log.log({"event": "error", "step": err.step, "loss": str(err.loss)})
            raise
        finally:
            self.log.close()
        return TrainResult(cfg.steps, self.metrics, self.log.history, self.losses, out,
                           self.last_ckpt)  # fmt: skip

    def _next_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's batch; under DDP trimmed to the smallest rank's (bad samples dropped)."""
        images, tokens, skipped = next(self.batches)
        n = int(_reduce(images.shape[0], self.d, "MIN"))
        if n == 0:
            raise RuntimeError(f"step {step}: every sample of a local batch was bad")
        self.window[2] += skipped
        dev = self.d.device
        return images[:n].to(dev, non_blocking=True), tokens[:n].to(dev, non_blocking=True)

    def _guard(self, loss: torch.Tensor, step: int) -> None:
        """Stop before any gradient or optimizer step if the loss is not finite (any rank)."""
        if _reduce(0.0 if torch.isfinite(loss).all() else 1.0, self.d, "MAX") > 0:
            raise NonFiniteLossError(step, float(loss.detach()), self.last_ckpt)

    def _step(self, step: int) -> None:
        images, tokens = self._next_batch(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = contrastive_step(
            self.forward, self.loss_fn, images, tokens, micro_batch_size=self.micro,
            autocast=self.autocast, scale_loss=self.scaler.scale, no_sync=self.no_sync,
            guard=partial(self._guard, step=step),
        )  # fmt: skip
        fsdp.average_gradients(self.replicated)
        if self.cfg.optim.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.requires_grad]
            clip = fsdp.clip_grad_norm_ if self.fsdp else torch.nn.utils.clip_grad_norm_
            clip(params, self.cfg.optim.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        clamp_logit_scale_(self.clip)
        self.losses[step] = _reduce(loss, self.d)
        self.window[1] += images.shape[0] * self.d.world_size
        rate = self.window[1] / max(time.perf_counter() - self.window[0], 1e-9)
        self.log.progress(self.losses[step], rate)
        self.parts[step] = dict(getattr(self.loss_fn, "last", {}))

    def _log(self, step: int) -> None:
        start, samples, skipped = self.window
        record = {
            "event": "train", "step": step, "loss": self.losses[step],
            "lr": self.scheduler.get_last_lr()[0],
            "logit_scale": float(self.clip.logit_scale.detach().exp()),
            "samples_per_s": samples / max(time.perf_counter() - start, 1e-9),
            "skipped": skipped, **self.parts.get(step, {}),
        }  # fmt: skip
        self.log.log(record)
        self.metrics.update(record)
        self.window = [time.perf_counter(), 0, 0]

    def _eval(self, step: int) -> None:
        evaluations = _evaluations(self.cfg)
        if not self.d.main or not evaluations:
            return
        devices = [self.d.device] if self.d.device.type == "cuda" else []
        scores: dict[str, float] = {}
        with torch.random.fork_rng(devices=devices):  # evaluation must not shift the RNG
            for prefix, name, data, options in evaluations:
                metrics = evaluate(name, self.clip, options, data)
                scores.update({f"{prefix}{key}": value for key, value in metrics.items()})
        self.metrics.update(scores)
        self.log.log({"event": "eval", "step": step, **scores})

    def _save(self, step: int) -> None:
        rng = gather_rng()  # a collective: every rank takes part
        cfg = self.cfg
        weights, sharded = self._save_shards(step) if self.fsdp else (None, None)
        if has_lora(self.clip):  # the merged weights: an ordinary, loadable checkpoint
            weights = merged_state_dict(self.clip)
        if self.d.main:
            bias = self.model.logit_bias
            state = training_state(
                None if self.fsdp else self.optimizer, self.scheduler, self.scaler, rng,
                {"logit_bias": bias} if bias is not None else {},
                data={"step": step, "samples_seen": step * cfg.batch_size, "seed": cfg.seed},
                config=config_to_dict(cfg),
                metrics={k: v for k, v in self.metrics.items() if isinstance(v, int | float | str)},
            )  # fmt: skip
            self.last_ckpt = save_checkpoint(cfg.output_dir, step, self.clip, state, cfg.keep_last,
                                             weights=weights, sharded=sharded)  # fmt: skip
        if self.d.world_size > 1:
            dist.barrier()
            self.last_ckpt = Path(cfg.output_dir) / f"step_{step}"

    def _save_shards(self, step: int) -> tuple[dict[str, torch.Tensor], Path]:
        """FSDP (every rank): the gathered weights (rank 0) and the shards, written to a
        temporary directory that rank 0 then moves into ``step_N/``."""
        weights = fsdp.full_state_dict(self.clip)
        sharded = Path(self.cfg.output_dir) / f".tmp_sharded_{step}"
        if self.d.main:
            shutil.rmtree(sharded, ignore_errors=True)
        dist.barrier()
        fsdp.save_sharded(sharded, self.model, self.optimizer)
        dist.barrier()
        return weights, sharded
