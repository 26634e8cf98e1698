"""Contrastive losses for CLIP training: symmetric InfoNCE (CLIP), sigmoid (SigLIP) and
CoCa's InfoNCE + captioning cross-entropy.

Both losses take L2-normalised features and the *exponentiated* temperature
(``model.logit_scale.exp()``), like open_clip's losses.

Distributed training
--------------------
When ``torch.distributed`` is initialised with more than one rank and ``gather=True``,
features are all-gathered *with gradients* (``torch.distributed.nn.functional.all_gather``)
so each rank sees the global batch. Every rank must hold a local batch of the same size.

Gradient convention (the one DDP expects): the backward of the differentiable all-gather
*sums* the gradients that all ranks send to a rank's local features, and DDP then
*averages* parameter gradients over the ``W`` ranks. Each loss is built so that the mean of
the per-rank losses is the single-process loss ``L`` on the global batch:

* ``ClipLoss(local_loss=False)``: every rank computes the full global loss, so each rank's
  value is ``L`` itself. A rank's local features receive ``W * dL/dx`` (one ``dL/dx`` from
  each rank); DDP's division by ``W`` restores ``dL/dθ``. ``logit_scale`` is replicated, its
  per-rank gradient is ``dL/ds`` and averaging keeps it.
* ``ClipLoss(local_loss=True)`` and ``SigLipLoss``: rank ``r`` computes only its own rows
  (local queries against all keys), normalised by the *local* batch size, so
  ``loss_r = W * (share of L from rank r)`` and ``mean_r(loss_r) = L``. The summed
  all-gather backward gives ``d(sum_r loss_r)/dx = W * dL/dx``; averaging again gives
  ``dL/dθ``.

So with DDP (or a manual all-reduce mean of gradients) the parameter gradients equal the
single-process ones; to log the global loss, all-reduce-average the per-rank values.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .errors import UsageError

__all__ = [
    "SIGLIP_INIT_BIAS",
    "SIGLIP_INIT_SCALE",
    "ClipLoss",
    "CoCaLoss",
    "SigLipLoss",
    "all_gather_with_grad",
    "clamp_logit_scale_",
]

#: SigLIP's initial *raw* (log) temperature: ``exp(SIGLIP_INIT_SCALE) == 10``.
SIGLIP_INIT_SCALE: float = math.log(10)
#: SigLIP's initial logit bias.
SIGLIP_INIT_BIAS: float = -10.0


def _rank_and_world(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` of ``group``; ``(0, 1)`` when not running distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def all_gather_with_grad(
    tensor: torch.Tensor, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, keeping the autograd graph.

    The backward sums the incoming gradients of all ranks (reduce-scatter semantics).
    """
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(tensor) if group is None else all_gather(tensor, group=group)
    return torch.cat(parts, dim=0)


class _GatheringLoss(nn.Module):
    """A contrastive loss that takes its negatives from every rank when ``gather`` is on
    and the run is distributed (over ``group``, default: the world)."""

    def __init__(self, gather: bool, group: dist.ProcessGroup | None) -> None:
        super().__init__()
        self.gather = gather
        self.group = group

    def _gathering_rank(self) -> int | None:
        """This rank when features are to be all-gathered (world size > 1), else ``None``."""
        rank, world = _rank_and_world(self.group)
        return rank if world > 1 and self.gather else None


class ClipLoss(_GatheringLoss):
    """Symmetric InfoNCE: mean of image→text and text→image cross-entropy.

    Args:
        gather: when running distributed (world size > 1), all-gather features with
            gradients so negatives come from the global batch. ``False`` keeps each
            rank's loss purely local.
        local_loss: with gathering, compute only this rank's rows (local features vs all
            gathered ones, labels offset by ``rank * B_local``) instead of the full
            ``B_global x B_global`` matrix on every rank. Cheaper; same gradients.
        group: process group (default: the world).
    """

    def __init__(
        self,
        gather: bool = True,
        local_loss: bool = False,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(gather, group)
        self.local_loss = local_loss

    def get_logits(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits_per_image, logits_per_text, labels)`` for this rank."""
        rank = self._gathering_rank()
        n_local = image_features.shape[0]
        device = image_features.device
        if rank is not None:
            all_images = all_gather_with_grad(image_features, self.group)
            all_texts = all_gather_with_grad(text_features, self.group)
            if self.local_loss:
                per_image = logit_scale * image_features @ all_texts.T
                per_text = logit_scale * text_features @ all_images.T
                labels = torch.arange(n_local, device=device) + rank * n_local
            else:
                per_image = logit_scale * all_images @ all_texts.T
                per_text = per_image.T
                labels = torch.arange(all_images.shape[0], device=device)
        else:
            per_image = logit_scale * image_features @ text_features.T
            per_text = logit_scale * text_features @ image_features.T
            labels = torch.arange(n_local, device=device)
        return per_image, per_text, labels

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
    ) -> torch.Tensor:
        """Loss from normalised ``(N, D)`` features and the exponentiated scale."""
        per_image, per_text, labels = self.get_logits(image_features, text_features, logit_scale)
        return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2


class CoCaLoss(ClipLoss):
    """CoCa's objective, as open_clip's ``CoCaLoss``: ``clip_loss_weight`` x the InfoNCE
    of :class:`ClipLoss` plus ``caption_loss_weight`` x the next-token cross-entropy of the
    decoder ``logits`` ``(N, L, V)`` against ``labels`` ``(N, L)``, ``pad_id`` ignored.
    ``last`` holds the two weighted terms of the latest call (detached), for logging."""

    def __init__(
        self,
        caption_loss_weight: float = 2.0,
        clip_loss_weight: float = 1.0,
        pad_id: int = 0,
        gather: bool = True,
        local_loss: bool = False,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(gather, local_loss, group)
        self.caption_loss_weight, self.clip_loss_weight = caption_loss_weight, clip_loss_weight
        self.pad_id = pad_id
        self.last: dict[str, float] = {}

    def forward(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """Weighted contrastive loss + weighted caption loss (each kept in ``last``)."""
        if self.clip_loss_weight:
            clip = self.clip_loss_weight * super().forward(image_features, text_features,
                                                           logit_scale)  # fmt: skip
        else:
            clip = torch.zeros((), device=logits.device)
        caption = F.cross_entropy(logits.permute(0, 2, 1), labels, ignore_index=self.pad_id)
        caption = caption * self.caption_loss_weight
        self.last = {"contrastive_loss": float(clip.detach()),
                     "caption_loss": float(caption.detach())}  # fmt: skip
        return clip + caption


class SigLipLoss(_GatheringLoss):
    """Sigmoid loss (SigLIP, https://arxiv.org/abs/2303.15343).

    ``loss = -sum_ij log sigmoid(y_ij * (scale * <img_i, txt_j> + bias)) / N`` with
    ``y_ij = +1`` for matching pairs and ``-1`` otherwise, ``N`` the (local) number of
    images: the normalisation of open_clip's ``SigLipLoss``.

    Distributed (``gather=True``, world size > 1): text features are all-gathered with
    gradients and the local images are scored against all texts; only this rank's own
    diagonal is positive. The mean of the per-rank losses equals the global loss (see the
    module docstring). This is open_clip's ``dist_impl="gather"`` variant.

    Args:
        gather: all-gather text features when running distributed.
        group: process group (default: the world).
    """

    def __init__(self, gather: bool = True, group: dist.ProcessGroup | None = None) -> None:
        super().__init__(gather, group)

    def get_logits_and_labels(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, labels)`` of shape ``(N_local, N_texts)`` for this rank."""
        rank = self._gathering_rank()
        n_local = image_features.shape[0]
        offset = 0
        if rank is not None:
            text_features = all_gather_with_grad(text_features, self.group)
            offset = rank * n_local
        logits = logit_scale * image_features @ text_features.T + logit_bias
        labels = -torch.ones_like(logits)
        rows = torch.arange(n_local, device=logits.device)
        labels[rows, rows + offset] = 1.0
        return logits, labels

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
    ) -> torch.Tensor:
        """Loss from normalised ``(N, D)`` features, exponentiated scale and bias."""
        logits, labels = self.get_logits_and_labels(
            image_features, text_features, logit_scale, logit_bias
        )
        return -F.logsigmoid(labels * logits).sum() / image_features.shape[0]


def clamp_logit_scale_(
    model_or_param: nn.Module | torch.Tensor,
    max_value: float = math.log(100),
    min_value: float = 0.0,
) -> None:
    """Clamp the raw (log) ``logit_scale`` to ``[min_value, max_value]`` in place.

    Accepts the parameter itself or a module; for a module every parameter whose name ends
    in ``logit_scale`` is clamped (so DDP/compile wrappers work). Call after each
    optimiser step, as CLIP does (temperature capped at 100).
    """
    if isinstance(model_or_param, torch.Tensor):
        params = [model_or_param]
    else:
        params = [
            p
            for name, p in model_or_param.named_parameters()
            if name.rsplit(".", 1)[-1] == "logit_scale"
        ]
        if not params:
            raise UsageError(f"{type(model_or_param).__name__} has no 'logit_scale' parameter")
    with torch.no_grad():
        for param in params:
            param.clamp_(min_value, max_value)
