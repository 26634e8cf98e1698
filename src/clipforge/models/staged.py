"""What towers built of stages of blocks share (timm's ConvNeXt and Swin trunks): the blocks
in order, LiT that also unlocks the trunk's final norm, checkpointing per stage, timm's init."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from torch import nn

from .tower import Tower


def timm_init_(model: nn.Module) -> None:
    """timm's init for its convolutional and windowed trunks: truncated normal (std 0.02)
    convolution and linear weights, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class StagedTower(Tower):
    """A tower whose ``stages`` each hold ``blocks`` and a ``grad_checkpointing`` flag: a
    timm ``trunk`` and open_clip's projection ``head``."""

    head_names = ("head",)
    trunk: nn.Module
    head: nn.Module

    def __init__(self, cfg: Any, embed_dim: int, trunk: nn.Module, head: nn.Module) -> None:
        """``cfg``: the tower config (with an ``image_size``)."""
        super().__init__()
        self.config, self.image_size, self.output_dim = cfg, cfg.image_size, embed_dim
        self.trunk, self.head = trunk, head
        self.init_weights()

    def init_weights(self) -> None:
        """timm's init (:func:`timm_init_`)."""
        timm_init_(self)

    @property
    @abstractmethod
    def stages(self) -> Sequence[Any]:
        """The stages, input side first."""

    @property
    @abstractmethod
    def final_norm(self) -> nn.Module:
        """The trunk's norm after the last block (unlocked with the head by LiT)."""

    @property
    def blocks(self) -> list[nn.Module]:
        """Every block of every stage, input side first."""
        return [block for stage in self.stages for block in stage.blocks]  # type: ignore[union-attr]

    def lock(self, unlocked_last_n: int = 0) -> None:
        """LiT: freeze all but the last ``unlocked_last_n`` blocks, the final norm and head."""
        super().lock(unlocked_last_n)
        if unlocked_last_n:
            self.final_norm.requires_grad_(True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable
