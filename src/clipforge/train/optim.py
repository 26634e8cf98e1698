"""Which parameters train and how: LiT tower locking, AdamW groups, warm-up + cosine."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig

__all__ = [
    "NO_DECAY_KEYWORDS",
    "WarmupCosine",
    "build_optimizer",
    "build_scheduler",
    "lock_tower",
    "no_weight_decay",
    "param_groups",
]

#: tower parameters after the transformer blocks (unlocked together with the last blocks)
HEAD_PARAMS: tuple[str, ...] = ("ln_post", "proj", "ln_final", "text_projection")
#: parameters whose name contains one of these get no weight decay (besides ndim < 2 ones)
NO_DECAY_KEYWORDS: tuple[str, ...] = ("bias", "logit_scale", "logit_bias", "gain")


def lock_tower(tower: nn.Module, unlocked_last_n_layers: int = 0) -> None:
    """Freeze ``tower``; keep its last N transformer blocks (and the head after them) trainable."""
    for param in tower.parameters():
        param.requires_grad_(False)
    if unlocked_last_n_layers == 0:
        return
    blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
    if blocks is None:
        raise ValueError(f"{type(tower).__name__} has no transformer blocks to unlock")
    if unlocked_last_n_layers > len(blocks):
        raise ValueError(f"cannot unlock {unlocked_last_n_layers} of {len(blocks)} blocks")
    for block in list(blocks)[-unlocked_last_n_layers:]:
        block.requires_grad_(True)
    for name, param in tower.named_parameters():
        if name.split(".")[0] in HEAD_PARAMS:
            param.requires_grad_(True)


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Gains, biases, 1-D embeddings, temperature and bias scalars are not decayed."""
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim < 2 or any(k in leaf for k in NO_DECAY_KEYWORDS)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups (``decay``, ``no_decay``) of the trainable parameters.

    Each group carries the parameter ``names`` (kept in the optimizer state for audits).
    """
    groups: dict[str, dict] = {
        "decay": {"params": [], "names": [], "weight_decay": weight_decay, "group": "decay"},
        "no_decay": {"params": [], "names": [], "weight_decay": 0.0, "group": "no_decay"},
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = groups["no_decay" if no_weight_decay(name, param) else "decay"]
        group["params"].append(param)
        group["names"].append(name)
    return [g for g in groups.values() if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model``."""
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters (are both towers locked?)")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


class WarmupCosine:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` (picklable)."""

    def __init__(
        self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, cosine: bool = True
    ) -> None:
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.min_ratio, self.cosine = min_ratio, cosine

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if not self.cosine:
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR (call ``step()`` after every optimizer step)."""
    fn = WarmupCosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio, cfg.schedule == "cosine")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
