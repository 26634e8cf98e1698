"""LoRA fine-tuning: low-rank adapters on the transformer projections of a CLIP model.

Each adapted weight ``W`` (``attn.in_proj_weight``, ``attn.out_proj.weight``,
``mlp.c_fc.weight``, ``mlp.c_proj.weight``) becomes ``W + (B @ A) * alpha / rank`` through a
``torch.nn.utils.parametrize`` parametrization, which works the same for the raw fused
``in_proj_weight`` parameter (used with ``F.linear``) and for ``nn.Linear`` weights. ``B`` is
zero-initialised, so an adapted model starts out computing exactly what the base model does.

>>> model = clipforge.load("ViT-B-32", pretrained="openai")
>>> apply_lora(model, rank=8, alpha=16)          # freezes everything but the adapters
>>> optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-4)
>>> ...                                         # train
>>> merge_lora(model)                            # plain weights again, original keys
>>> clipforge.save(model, "finetuned/")          # an ordinary checkpoint

While adapters are attached, ``state_dict`` keys contain ``parametrizations.*`` and the model
cannot be pickled as a whole: save training checkpoints with :func:`lora_state_dict` (or the
full ``state_dict``) and ship models after :func:`merge_lora`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from .errors import UsageError

# target group -> (submodule path inside a ResidualAttentionBlock, parameter name)
_TARGETS: dict[str, tuple[tuple[str, str], ...]] = {
    "in_proj": (("attn", "in_proj_weight"),),
    "out_proj": (("attn.out_proj", "weight"),),
    "c_fc": (("mlp.c_fc", "weight"),),
    "c_proj": (("mlp.c_proj", "weight"),),
}
_TARGETS["attn"] = _TARGETS["in_proj"] + _TARGETS["out_proj"]
_TARGETS["mlp"] = _TARGETS["c_fc"] + _TARGETS["c_proj"]
_TOWERS = {"image": "visual", "text": "text"}
_SAVED_FLAGS = "_lora_requires_grad"  # model attribute: requires_grad flags before apply_lora


class LoRAParametrization(nn.Module):
    """``weight -> weight + (lora_B @ drop(lora_A)) * scale`` for an ``(out, in)`` weight.

    ``lora_A`` (``rank x in``) is Kaiming-uniform initialised, ``lora_B`` (``out x rank``)
    zero-initialised. Because the adapter acts on the weight, ``dropout`` drops *input
    features* of the low-rank branch (columns of ``A``) with one mask per forward pass shared
    by the whole batch, rather than PEFT's per-element dropout of the activations.
    """

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        out_features, in_features = weight.shape
        factory = {"device": weight.device, "dtype": weight.dtype}
        self.rank = rank
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.param_order: list[str] = []  # the host module's parameter names, for merge_lora

    def delta(self) -> torch.Tensor:
        """The low-rank update ``(B @ A) * scale`` (dropout applied in training mode)."""
        a = self.lora_A
        if isinstance(self.dropout, nn.Dropout) and self.training:
            mask = self.dropout(torch.ones(1, a.shape[1], device=a.device, dtype=a.dtype))
            a = a * mask
        return (self.lora_B @ a) * self.scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta().to(weight.dtype)

    def extra_repr(self) -> str:
        out_features, in_features = self.lora_B.shape[0], self.lora_A.shape[1]
        return f"in={in_features}, out={out_features}, rank={self.rank}, scale={self.scale:g}"


def _resolve_targets(targets: str | Sequence[str]) -> list[tuple[str, str]]:
    names = (targets,) if isinstance(targets, str) else tuple(targets)
    if not names:
        raise UsageError("targets is empty")
    sites: list[tuple[str, str]] = []
    for name in names:
        if name not in _TARGETS:
            raise UsageError(f"unknown LoRA target {name!r}; expected some of {sorted(_TARGETS)}")
        sites.extend(s for s in _TARGETS[name] if s not in sites)
    return sites


def _blocks(model: nn.Module, towers: str | Sequence[str]) -> Iterator[tuple[str, nn.Module]]:
    names = (towers,) if isinstance(towers, str) else tuple(towers)
    if not names:
        raise UsageError("towers is empty")
    for tower in names:
        if tower not in _TOWERS:
            raise UsageError(f"unknown tower {tower!r}; expected 'image' and/or 'text'")
        module = getattr(model, _TOWERS[tower])
        if module is None:  # a single-tower model: adapt what exists
            continue
        blocks = module.adapter_blocks()
        if not blocks:
            raise UsageError(
                f"the {tower} tower ({type(module).__name__}) has no transformer blocks to "
                f"adapt; use towers=('text',) for ResNet image towers"
            )
        for name, block in blocks:
            yield f"{_TOWERS[tower]}.{name}", block


def _lora_sites(model: nn.Module) -> Iterator[tuple[nn.Module, str, LoRAParametrization]]:
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        # set by torch.nn.utils.parametrize; nn.Module's stubs cannot know the attribute
        plists = cast(nn.ModuleDict, module.parametrizations)
        for name, plist in plists.items():
            for p in cast(parametrize.ParametrizationList, plist):
                if isinstance(p, LoRAParametrization):
                    yield module, name, p


def has_lora(model: nn.Module) -> bool:
    """Whether ``model`` has LoRA adapters attached."""
    return next(_lora_sites(model), None) is not None


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    targets: str | Sequence[str] = ("attn", "mlp"),
    towers: str | Sequence[str] = ("image", "text"),
    trainable: Sequence[str] = (),
) -> nn.Module:
    """Attach LoRA adapters in place and freeze every other parameter; returns ``model``.

    Args:
        rank: inner dimension ``r`` of each adapter.
        alpha: the update is scaled by ``alpha / rank``.
        dropout: drop probability for the adapters' input features (training mode only;
            see :class:`LoRAParametrization`).
        targets: ``"attn"`` (``in_proj`` + ``out_proj``), ``"mlp"`` (``c_fc`` + ``c_proj``)
            or the individual names ``"in_proj"``, ``"out_proj"``, ``"c_fc"``, ``"c_proj"``.
        towers: ``"image"`` and/or ``"text"``; towers the model lacks are skipped, a
            ResNet image tower is an error.
        trainable: names of extra parameters kept trainable, matched as substrings of
            ``model.named_parameters()`` names (e.g. ``("logit_scale",)``).

    Every adapter is created on the device and dtype of the weight it adapts. A model with
    ``n`` adapted ``(out, in)`` weights gains ``rank * sum(out + in)`` parameters.
    """
    if rank < 1:
        raise UsageError(f"rank must be >= 1, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise UsageError(f"dropout must be in [0, 1), got {dropout}")
    if has_lora(model):
        raise UsageError("the model already has LoRA adapters; merge_lora() it first")
    sites = _resolve_targets(targets)
    blocks = list(_blocks(model, towers))
    if not blocks:
        raise UsageError(f"no transformer blocks found in towers {towers!r}")
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for _, block in blocks:
        for path, param_name in sites:
            module = block.get_submodule(path)
            weight = getattr(module, param_name)
            lora = LoRAParametrization(weight.detach(), rank, alpha, dropout)
            lora.param_order = list(module._parameters)
            parametrize.register_parametrization(module, param_name, lora)
    for name, param in model.named_parameters():
        param.requires_grad_(
            name.endswith((".lora_A", ".lora_B")) or any(t in name for t in trainable)
        )
    setattr(model, _SAVED_FLAGS, flags)
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (``lora_A`` and ``lora_B`` of every adapted weight)."""
    return [p for _, _, lora in _lora_sites(model) for p in (lora.lora_A, lora.lora_B)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors only, keyed as in ``model.state_dict()``.

    Restore them into a model adapted with the same settings with
    ``model.load_state_dict(sd, strict=False)``.
    """
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight and remove it; returns ``model``.

    Afterwards the model is a plain model again: same parameter objects and ``state_dict``
    keys as before :func:`apply_lora`, savable with :func:`clipforge.save` (any format), and
    the ``requires_grad`` flags are restored to what they were before :func:`apply_lora`.
    The update is computed in float32 without dropout, whatever the current mode.
    """
    sites = list(_lora_sites(model))
    if not sites:
        raise UsageError("the model has no LoRA adapters")
    for module, name, lora in sites:
        delta = (lora.lora_B.float() @ lora.lora_A.float()) * lora.scale
        parametrize.remove_parametrizations(module, name, leave_parametrized=False)
        weight = getattr(module, name)
        weight.copy_((weight.float() + delta).to(weight.dtype))
        # removal re-registers the weight last: restore the original order (state_dict keys)
        params = dict(module._parameters)
        module._parameters.clear()
        for key in [k for k in lora.param_order if k in params] + list(params):
            module._parameters.setdefault(key, params[key])
    flags = getattr(model, _SAVED_FLAGS, {})
    for name, param in model.named_parameters():
        param.requires_grad_(flags.get(name, True))
    if hasattr(model, _SAVED_FLAGS):
        delattr(model, _SAVED_FLAGS)
    return model


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as :func:`merge_lora` would leave it (the original keys, in
    another order; adapters folded in float32 as there), without changing ``model``: what a
    training run saves at each checkpoint while its adapters stay attached."""
    names = {id(m): n for n, m in model.named_modules()}
    state = model.state_dict()
    for module, name, lora in _lora_sites(model):
        prefix = f"{names[id(module)]}.parametrizations.{name}"
        base = state.pop(f"{prefix}.original")
        for key in [k for k in state if k.startswith(f"{prefix}.")]:
            del state[key]  # the adapter tensors (lora_A, lora_B)
        delta = (lora.lora_B.float() @ lora.lora_A.float()) * lora.scale
        state[f"{names[id(module)]}.{name}"] = (base.float() + delta).to(base.dtype)
    return state


__all__ = [
    "LoRAParametrization",
    "apply_lora",
    "has_lora",
    "lora_parameters",
    "lora_state_dict",
    "merge_lora",
    "merged_state_dict",
]
