"""The ``Tower`` protocol every image and text tower implements, and the tower registry.

Training (LiT locking, weight-decay groups, patch dropout, gradient checkpointing), LoRA and
the embedding code talk to towers only through this interface, so a new tower type gets all
of them by implementing it, and is built by registering its config class:

>>> @register_tower(MyVisionConfig)
... class MyVisionTower(Tower):
...     def __init__(self, cfg: MyVisionConfig, settings: TowerSettings) -> None: ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import nn

from ..registry import Registry
from .intermediates import (
    Intermediates,
    IntermediatesRequest,
    TokenPass,
    image_grid,
    token_intermediates,
)

#: parameter-name fragments that are never weight-decayed (besides tensors with ndim < 2)
NO_DECAY_KEYWORDS: tuple[str, ...] = ("bias", "logit_scale", "logit_bias", "gain")


def decays(name: str, param: torch.Tensor) -> bool:
    """The default rule: matrices decay; gains, biases, 1-D embeddings and scalars do not."""
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim >= 2 and not any(k in leaf for k in NO_DECAY_KEYWORDS)


@dataclass(frozen=True)
class TowerSettings:
    """Model-wide settings every tower receives (a tower uses the ones that apply to it)."""

    embed_dim: int
    activation: str = "gelu"
    norm_eps: float = 1e-5

    def for_tower(self, activation: str | None, norm_eps: float | None) -> tuple[str, float]:
        """``(activation, norm_eps)`` of a tower: its own overrides where it sets them
        (not ``None``), else the model-wide ones."""
        return activation or self.activation, self.norm_eps if norm_eps is None else norm_eps


class Tower(nn.Module, ABC):
    """An image or text encoder: input → ``(N, output_dim)`` features.

    Implementations declare their structure instead of being probed for it:

    - ``blocks``: the residual blocks in order (LiT unlocks the last N, checkpointing wraps them);
    - ``adapter_blocks()``: the transformer blocks LoRA may adapt (none for convolutional towers);
    - ``head_names``: top-level parameter/module names after the blocks (unlocked with them);
    - ``supports_patch_dropout``: whether ``set_patch_dropout`` is meaningful;
    - ``export_forward()`` / ``input_spec()``: the traceable forward an ONNX export records,
      and how a runtime must feed it (a text tower's pooling: trimmable EOT or last token);
    - ``forward_intermediates()``: the outputs of chosen blocks and the final features from
      one pass, open_clip 3.x's hook (see :mod:`clipforge.models.intermediates`).
    """

    head_names: ClassVar[tuple[str, ...]] = ()
    default_output_fmt: ClassVar[str] = "NCHW"
    supports_patch_dropout: ClassVar[bool] = False
    patch_dropout: float = 0.0  # the rate set_patch_dropout sets
    output_dim: int

    @property
    @abstractmethod
    def blocks(self) -> Sequence[nn.Module]:
        """The tower's residual blocks, input side first."""

    @abstractmethod
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass (trade compute for memory)."""

    @abstractmethod
    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Per-token (or per-position) features ``(N, L, width)`` after the final norm."""

    def forward_intermediates(
        self,
        inputs: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        stop_early: bool = False,
        normalize_intermediates: bool = False,
        intermediates_only: bool = False,
        output_fmt: str | None = None,
        output_extra_tokens: bool = False,
    ) -> dict[str, Any]:
        """Block outputs and final features in one pass, with open_clip 3.x's arguments and
        keys: ``{image,text}_intermediates`` (plus ``image_intermediates_prefix``) and,
        unless ``intermediates_only``, ``{image,text}_features`` (unnormalised).
        ``output_fmt`` defaults to the tower's ``default_output_fmt`` (image towers
        ``"NCHW"``, text towers ``"NLC"``). Towers implement :meth:`intermediates`."""
        request = IntermediatesRequest(
            indices,
            stop_early,
            normalize_intermediates,
            intermediates_only,
            output_fmt or self.default_output_fmt,
            output_extra_tokens,
        )
        return self.intermediates(inputs, request)

    def intermediates(self, inputs: torch.Tensor, request: IntermediatesRequest) -> Intermediates:
        """The hook behind :meth:`forward_intermediates`. Transformer towers implement only
        :meth:`token_pass` (their embedded tokens, blocks, norm and pooling); others override
        this."""
        return token_intermediates(self.token_pass(inputs), request)

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        """A transformer tower's tokens and how to run them (see :class:`TokenPass`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward_intermediates")

    def adapter_blocks(self) -> list[tuple[str, nn.Module]]:
        """``(name, block)`` of the transformer blocks LoRA adapts; names relative to the tower."""
        return []

    def lock(self, unlocked_last_n: int = 0) -> None:
        """Freeze the tower (LiT), keeping the last ``unlocked_last_n`` blocks and the head."""
        if unlocked_last_n < 0:
            raise ValueError(f"unlocked_last_n must be >= 0, got {unlocked_last_n}")
        self.requires_grad_(False)
        if unlocked_last_n == 0:
            return
        blocks = list(self.blocks)
        if unlocked_last_n > len(blocks):
            raise ValueError(
                f"cannot unlock {unlocked_last_n} of the {len(blocks)} blocks of "
                f"{type(self).__name__}"
            )
        for block in blocks[-unlocked_last_n:]:
            block.requires_grad_(True)
        for name, param in self.named_parameters():
            if name.split(".")[0] in self.head_names:
                param.requires_grad_(True)

    def no_weight_decay(self) -> set[str]:
        """Names (relative to the tower) of parameters excluded from weight decay."""
        return {name for name, param in self.named_parameters() if not decays(name, param)}

    def set_patch_dropout(self, rate: float) -> None:
        """Drop this fraction of patch tokens in training (FLIP): sets ``patch_dropout``,
        which the tower's forward reads; towers without ``supports_patch_dropout`` refuse."""
        if not self.supports_patch_dropout:
            raise ValueError(f"{type(self).__name__} does not support patch dropout")
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"patch dropout must be in [0, 1), got {rate}")
        self.patch_dropout = rate

    def export_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``forward`` over the whole input, free of data-dependent shapes, for tracing
        exporters (ONNX); the default is ``forward`` itself."""
        return self(inputs)

    @property
    def can_reparameterize(self) -> bool:
        """Whether :meth:`reparameterize` would change the tower (it has unfolded branches)."""
        return False

    def reparameterize(self) -> Tower:
        """Fold training-time branches into the inference-time form (MobileOne/FastViT
        towers; in place). Towers without such branches are already in it: no-op."""
        return self

    def prepare_state(self, state: Mapping[str, torch.Tensor], prefix: str) -> None:
        """Adapt the tower's structure to a state dict about to be loaded (keys under
        ``prefix``), e.g. fold itself when the weights are in folded form. Default: nothing."""

    def input_spec(self) -> dict[str, Any]:
        """How a runtime without this code must feed the exported tower (a JSON-able dict,
        stored with an ONNX export). Text towers declare their pooling: ``{"pooling":
        "eot", "eot_token_id": ...}`` (causal, so padding after the pooled token may be
        dropped) or ``{"pooling": "last"}`` (pad to the full context, never trim)."""
        return {}


class BlockStack(Protocol):
    """What :class:`TransformerTower` needs of its ``transformer``."""

    resblocks: nn.ModuleList
    grad_checkpointing: bool


class TransformerTower(Tower):
    """A tower around a stack of residual attention blocks at ``self.transformer``
    (:class:`~clipforge.models.layers.Transformer` or one with the same ``resblocks`` and
    ``grad_checkpointing``): its blocks, LoRA sites and checkpointing switch."""

    transformer: BlockStack

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.resblocks

    def adapter_blocks(self) -> list[tuple[str, nn.Module]]:
        return [(f"transformer.resblocks.{i}", b) for i, b in enumerate(self.blocks)]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable


class PatchTransformerTower(TransformerTower):
    """A ViT-like tower declared by its parts: ``_block_inputs(pixels)`` gives the first
    block's input and any further per-pass block arguments (rotary tables...), then come
    the blocks, ``ln_post`` and ``_pool`` (the embedding of the final tokens). ``forward``,
    ``forward_features`` and ``token_pass`` (timm's ``forward_intermediates`` as open_clip's
    ``TimmModel`` calls it: ``num_prefix`` class tokens, a ``patch_size`` grid) follow."""

    transformer: Any  # a layers.BlockStack: called as transformer(x, *args), steps(*args)
    ln_post: nn.Module
    num_prefix: int = 0
    patch_size: int

    def _init_patches(self, cfg: Any, embed_dim: int, *, class_token: bool, bias: bool) -> None:
        """timm's stem of a ViT config ``cfg``: sizes, a ``patch_embed`` convolution
        (``bias``) and an optional ``class_embedding`` (``num_prefix`` 0 or 1)."""
        self.config = cfg
        self.image_size, self.patch_size = cfg.image_size, cfg.patch_size
        self.output_dim = embed_dim
        self.num_prefix = int(class_token)
        patch = cfg.patch_size
        self.patch_embed = nn.Conv2d(3, cfg.width, patch, stride=patch, bias=bias)
        self.class_embedding = nn.Parameter(torch.empty(cfg.width)) if class_token else None

    def _block_inputs(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[Any, ...]]:
        raise NotImplementedError

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, prefix + patches, width)``: every token after ``ln_post`` (no pooling)."""
        x, args = self._block_inputs(inputs)
        return self.ln_post(self.transformer(x, *args))

    def token_pass(self, inputs: torch.Tensor) -> TokenPass:
        x, args = self._block_inputs(inputs)
        return TokenPass(
            self.transformer.steps(*args), x, kind="image", norm=self.ln_post, pool=self._pool,
            num_prefix=self.num_prefix, grid=image_grid(inputs, self.patch_size),
        )  # fmt: skip

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x, args = self._block_inputs(pixels)
        return self._pool(self.transformer(x, *args))


T = TypeVar("T", bound=type[Tower])
#: tower config class name -> the tower class built from such configs
TOWERS: Registry[type[Tower]] = Registry("tower")


def register_tower(config_class: type, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator: towers of ``config_class`` configs are built by the decorated class."""

    def register(tower_class: T) -> T:
        if not issubclass(tower_class, Tower):
            raise TypeError(f"{tower_class.__name__} must subclass clipforge.models.Tower")
        TOWERS.register(config_class.__name__, tower_class, replace=replace)
        return tower_class

    return register


def build_tower(config: Any, settings: TowerSettings) -> Tower:
    """The registered tower for ``config``'s type, built from it and the shared settings."""
    return TOWERS.get(type(config).__name__)(config, settings)


def towers_in(model: nn.Module) -> list[tuple[str, Tower]]:
    """``(qualified name, tower)`` for every tower inside ``model``, outermost first."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Tower)]
