"""One contrastive training step, optionally with GradCache accumulation.

GradCache (Gao et al., 2021, https://arxiv.org/abs/2101.06983) trains with the negatives of
the whole batch while holding activations of only one micro-batch:

1. embed every micro-batch without gradients, remembering its RNG state;
2. compute the loss on the full ``(B, B)`` similarity matrix from the cached features
   (made leaf tensors that require grad) and take the gradient of the loss with respect to
   the features, the temperature and the bias;
3. re-run each micro-batch with gradients, replaying its RNG state so that patch dropout
   (and any dropout) draws the same masks, and backpropagate
   ``<features, feature_grad>``, which puts exactly ``dL/dθ`` into the parameters.

The loss is computed (and passed to ``guard``) before any parameter gradient exists, so a
non-finite loss can abort the step cleanly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from typing_extensions import Unpack

if TYPE_CHECKING:
    from ..models import CLIP

__all__ = ["ContrastiveModel", "RngState", "contrastive_loss", "contrastive_step"]

#: ``(image_features, text_features, scale, bias)``, for CoCa then ``(logits, labels)``
Outputs = tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, Unpack[tuple[torch.Tensor, ...]]
]
#: what the step functions call: a :class:`ContrastiveModel`, or it wrapped (DDP, compile)
Forward = Callable[[torch.Tensor, torch.Tensor], Outputs]
ContextFactory = Callable[[], contextlib.AbstractContextManager]


class ContrastiveModel(nn.Module):
    """A CLIP model plus SigLIP's learnable logit bias (when ``init_bias`` is given).

    A model that has its own ``logit_bias`` (a SigLIP architecture) trains that one;
    otherwise a bias starting at ``init_bias`` is added here. ``forward`` returns
    ``(image_features, text_features, exp(logit_scale), bias or None)``, the features
    L2-normalised; with ``captions`` (a CoCa model) followed by the decoder's teacher-forced
    ``logits`` and their ``labels`` (:meth:`~clipforge.models.CoCa.caption_logits`).
    """

    def __init__(self, clip: CLIP, init_bias: float | None = None, captions: bool = False) -> None:
        super().__init__()
        self.clip, self.captions = clip, captions
        self.uses_bias = init_bias is not None
        own = self.uses_bias and clip.logit_bias is None
        self.logit_bias = (
            nn.Parameter(torch.tensor(float(init_bias))) if own and init_bias is not None else None
        )

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> Outputs:
        if self.captions:
            out = self.clip.caption_logits(images, tokens)  # type: ignore[operator]
            return (out["image_features"], out["text_features"], out["logit_scale"], None,
                    out["logits"], out["labels"])  # fmt: skip
        image_features, text_features, scale = self.clip(images, tokens)
        bias = self.logit_bias
        if bias is None and self.uses_bias:
            bias = self.clip.logit_bias
        return image_features, text_features, scale, bias * 1.0 if bias is not None else None


class RngState:
    """The CPU (and, for a CUDA device, that device's) torch RNG state, to replay later."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def contrastive_loss(
    loss_fn: nn.Module,
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    *captions: torch.Tensor,
) -> torch.Tensor:
    """The loss in fp32; ``bias`` is passed only to losses that take one (SigLIP),
    ``captions`` (CoCa's decoder logits and labels) to the CoCa loss."""
    args = [image_features.float(), text_features.float(), scale.float()]
    if bias is not None:
        args.append(bias.float())
    if captions:
        args += [captions[0].float(), captions[1]]
    return loss_fn(*args)


def _full_batch(
    model: Forward,
    loss_fn: nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    autocast: ContextFactory,
    scale_loss: Callable[[torch.Tensor], torch.Tensor],
    guard: Callable[[torch.Tensor], None],
) -> torch.Tensor:
    with autocast():
        outputs = model(images, tokens)
    loss = contrastive_loss(loss_fn, *outputs)
    guard(loss)
    scale_loss(loss).backward()
    return loss.detach()


def _embed_cached(
    model: Forward,
    chunks: list[tuple[torch.Tensor, torch.Tensor]],
    autocast: ContextFactory,
) -> tuple[list[RngState], list[Outputs]]:
    """Phase 1: features of every micro-batch without a graph, and their RNG states."""
    states, outputs = [], []
    with torch.no_grad():
        for images, tokens in chunks:
            states.append(RngState(images.device))
            with autocast():
                img, txt, scale, bias = model(images, tokens)
            outputs.append((img.float(), txt.float(), scale.float(), bias))
    return states, outputs


def _feature_grads(
    loss_fn: nn.Module,
    outputs: list[Outputs],
    scale_loss: Callable[[torch.Tensor], torch.Tensor],
    guard: Callable[[torch.Tensor], None],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Phase 2: the full-batch loss and its gradient w.r.t. features, scale and bias."""
    img = torch.cat([o[0] for o in outputs]).requires_grad_(True)
    txt = torch.cat([o[1] for o in outputs]).requires_grad_(True)
    scale = outputs[0][2].detach().clone().requires_grad_(True)
    bias = outputs[0][3]
    leaves = [img, txt, scale]
    if bias is not None:
        bias = bias.detach().float().clone().requires_grad_(True)
        leaves.append(bias)
    with torch.enable_grad():
        loss = contrastive_loss(loss_fn, img, txt, scale, bias)
        guard(loss)
        grads = torch.autograd.grad(scale_loss(loss), leaves)
    return loss.detach(), list(grads)


def _replay(
    model: Forward,
    chunks: list[tuple[torch.Tensor, torch.Tensor]],
    states: list[RngState],
    grads: list[torch.Tensor],
    autocast: ContextFactory,
    no_sync: ContextFactory | None,
) -> None:
    """Phase 3: re-run each micro-batch with a graph and push the cached gradients in."""
    g_img, g_txt, g_scale = grads[:3]
    g_bias = grads[3] if len(grads) > 3 else None
    k = len(chunks)
    start = 0
    for i, ((images, tokens), state) in enumerate(zip(chunks, states, strict=True)):
        stop = start + images.shape[0]
        sync = no_sync is None or i == k - 1
        with contextlib.nullcontext() if sync else no_sync():  # type: ignore[misc]
            state.restore()
            with autocast():
                img, txt, scale, bias = model(images, tokens)
            # scale/bias enter every micro-batch with 1/k of their gradient: all parameters
            # take part in every backward (DDP-friendly), and the sum is exact.
            surrogate = (img.float() * g_img[start:stop]).sum()
            surrogate = surrogate + (txt.float() * g_txt[start:stop]).sum()
            surrogate = surrogate + scale.float() * (g_scale / k)
            if bias is not None and g_bias is not None:
                surrogate = surrogate + bias.float() * (g_bias / k)
            surrogate.backward()
        start = stop


def contrastive_step(
    model: Forward,
    loss_fn: nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    *,
    micro_batch_size: int | None = None,
    autocast: ContextFactory = contextlib.nullcontext,
    scale_loss: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
    guard: Callable[[torch.Tensor], None] = lambda loss: None,
    no_sync: ContextFactory | None = None,
) -> torch.Tensor:
    """Forward + backward of one batch; returns the detached loss.

    ``model`` returns :data:`Outputs` (see :class:`ContrastiveModel`). Gradients are
    accumulated into ``.grad`` (zero them before). With ``micro_batch_size`` smaller than
    the batch, GradCache is used: same gradients, activation memory of one micro-batch.
    ``scale_loss`` is ``GradScaler.scale`` for fp16; ``guard(loss)`` runs before any
    backward (raise there to abort); ``no_sync`` is DDP's ``no_sync`` (all but the last
    micro-batch skip the gradient all-reduce).
    """
    n = images.shape[0]
    if micro_batch_size is None or micro_batch_size >= n:
        return _full_batch(model, loss_fn, images, tokens, autocast, scale_loss, guard)
    chunks = list(zip(images.split(micro_batch_size), tokens.split(micro_batch_size), strict=True))
    states, outputs = _embed_cached(model, chunks, autocast)
    loss, grads = _feature_grads(loss_fn, outputs, scale_loss, guard)
    _replay(model, chunks, states, grads, autocast, no_sync)
    return loss
