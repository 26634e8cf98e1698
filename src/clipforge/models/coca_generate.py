"""Caption generation for CoCa, token for token as open_clip's ``CoCa.generate``: sampling
(``top_k``, ``top_p``) and group beam search, written with torch alone.

open_clip builds these from transformers' logits processors and ``BeamSearchScorer``; the
same rules are restated here (they are a few lines each): the minimum-length rule (no
end-of-text before ``min_seq_len`` tokens), the repetition penalty, the top-k / top-p filters
and the beam scorer with its finished-hypothesis lists (length penalty 1, no early stop).
Beam scores are sums of raw decoder logits, as open_clip feeds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from ..errors import UsageError

GenerationType = Literal["beam_search", "top_p", "top_k"]
GENERATION_TYPES: tuple[str, ...] = ("beam_search", "top_p", "top_k")


@dataclass(frozen=True)
class GenerationOptions:
    """open_clip ``CoCa.generate``'s arguments and defaults (``text``: prompt ids to continue,
    sampling only). Token ids default to CLIP's BPE (start 49406, end 49407) and the model's
    padding id."""

    seq_len: int = 30
    max_seq_len: int = 77
    temperature: float = 1.0
    generation_type: str = "beam_search"
    top_p: float = 0.1
    top_k: int = 1
    pad_token_id: int | None = None
    eos_token_id: int | None = None
    sot_token_id: int | None = None
    num_beams: int = 6
    num_beam_groups: int = 3
    min_seq_len: int = 5
    repetition_penalty: float = 1.0
    fixed_output_length: bool = False
    text: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.generation_type not in GENERATION_TYPES:
            raise UsageError(
                f"generation_type must be one of {', '.join(GENERATION_TYPES)}, "
                f"got {self.generation_type!r}"
            )
        if self.seq_len <= self.min_seq_len:
            raise UsageError(f"seq_len {self.seq_len} must be larger than min_seq_len {self.min_seq_len}")
        if self.generation_type == "beam_search" and (
            self.num_beams < 2 or self.num_beam_groups < 1 or self.num_beams % self.num_beam_groups
        ):
            raise UsageError(
                f"num_beams ({self.num_beams}) must be at least 2 and divisible by "
                f"num_beam_groups ({self.num_beam_groups})"
            )
        if self.generation_type == "top_p" and not 0.0 <= self.top_p <= 1.0:
            raise UsageError(f"top_p must be in [0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0 or self.temperature <= 0:
            raise UsageError("repetition_penalty and temperature must be positive")


class Captioner(Protocol):
    """What generation needs of a CoCa model."""

    def encode_image_tokens(
        self, pixels: torch.Tensor, normalize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def next_token_logits(self, ids: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor: ...

    @property
    def pad_id(self) -> int: ...


@dataclass(frozen=True)
class _Ids:
    sot: int
    eos: int
    pad: int


def _process(ids: torch.Tensor, logits: torch.Tensor, opts: GenerationOptions, eos: int) -> torch.Tensor:
    """Minimum length (no end-of-text before ``min_seq_len`` ids), then repetition penalty."""
    if ids.shape[-1] < opts.min_seq_len:
        logits = logits.clone()
        logits[:, eos] = -torch.inf
    penalty = opts.repetition_penalty
    score = torch.gather(logits, 1, ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, ids, score)


def _warp(logits: torch.Tensor, opts: GenerationOptions) -> torch.Tensor:
    """The top-k or top-p filter (filtered logits become ``-inf``; one token always stays)."""
    if opts.generation_type == "top_k":
        k = min(max(opts.top_k, 1), logits.shape[-1])
        return logits.masked_fill(logits < torch.topk(logits, k)[0][..., -1, None], -torch.inf)
    sorted_logits, order = torch.sort(logits, descending=False)
    remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - opts.top_p)
    remove[..., -1:] = False
    return logits.masked_fill(remove.scatter(1, order, remove), -torch.inf)


def generate_tokens(model: Captioner, images: torch.Tensor, opts: GenerationOptions) -> torch.Tensor:
    """Caption ids ``(N, length)`` for ``images`` (see :class:`GenerationOptions`)."""
    ids = _Ids(
        49406 if opts.sot_token_id is None else opts.sot_token_id,
        49407 if opts.eos_token_id is None else opts.eos_token_id,
        model.pad_id if opts.pad_token_id is None else opts.pad_token_id,
    )
    if opts.generation_type == "beam_search":
        out = _beam_search(model, images, opts, ids)
        if opts.fixed_output_length and out.shape[1] < opts.seq_len:
            pad = out.new_full((out.shape[0], opts.seq_len - out.shape[1]), ids.pad)
            out = torch.cat([out, pad], dim=1)
        return out
    return _sample(model, images, opts, ids)


def _sample(model: Captioner, images: torch.Tensor, opts: GenerationOptions, ids: _Ids) -> torch.Tensor:
    """open_clip's top-k / top-p loop: finished rows get padding, the last step end-of-text."""
    _, image_tokens = model.encode_image_tokens(images)
    text = opts.text
    if text is None:
        text = torch.full((images.shape[0], 1), ids.sot, device=images.device, dtype=torch.long)
    squeeze = text.ndim == 1
    out = text[None] if squeeze else text
    while True:
        x = out[:, -opts.max_seq_len :]
        logits = model.next_token_logits(x, image_tokens)
        done = (out[:, -1] == ids.eos) | (out[:, -1] == ids.pad)
        sample = out.new_full((out.shape[0], 1), ids.pad)
        if done.all():
            if not opts.fixed_output_length:
                break
        else:
            active = ~done
            scores = _warp(_process(x[active], logits[active], opts, ids.eos), opts)
            probs = F.softmax(scores / opts.temperature, dim=-1)
            if x.shape[1] + 1 == opts.seq_len:
                sample[active] = ids.eos
            else:
                sample[active] = torch.multinomial(probs, 1)
        out = torch.cat([out, sample], dim=-1)
        if out.shape[-1] >= opts.seq_len:
            break
    return out.squeeze(0) if squeeze else out


class _Hypotheses:
    """The best ``size`` finished hypotheses of one (sentence, group): transformers'
    ``BeamHypotheses`` with length penalty 1 and no early stopping."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.beams: list[tuple[float, torch.Tensor]] = []
        self.worst = 1e9

    def add(self, hyp: torch.Tensor, sum_scores: float, length: int) -> None:
        score = sum_scores / length
        if len(self.beams) < self.size or score > self.worst:
            self.beams.append((score, hyp))
            if len(self.beams) > self.size:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum: float, cur_len: int) -> bool:
        return len(self.beams) >= self.size and self.worst >= best_sum / cur_len


class _BeamScorer:
    """transformers' ``BeamSearchScorer`` (one hypothesis kept, groups without diversity
    penalty) as open_clip drives it."""

    def __init__(self, batch: int, groups: int, size: int) -> None:
        self.batch, self.groups, self.size = batch, groups, size
        self.hyps = [_Hypotheses(size) for _ in range(batch * groups)]
        self.finished = [False] * (batch * groups)

    @property
    def done(self) -> bool:
        return all(self.finished)

    def process(
        self, group_ids: torch.Tensor, scores: torch.Tensor, tokens: torch.Tensor,
        origins: torch.Tensor, group: int, ids: _Ids,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """The group's next beams ``(scores, tokens, source rows)`` from its ``2 * size``
        best candidates per sentence; candidates ending in end-of-text become hypotheses."""
        cur_len = group_ids.shape[-1] + 1
        shape = (self.batch, self.size)
        next_scores = scores.new_zeros(shape)
        next_tokens = tokens.new_zeros(shape)
        next_rows = origins.new_zeros(shape)
        for b in range(self.batch):
            slot = b * self.groups + group
            if self.finished[slot]:
                next_tokens[b] = ids.pad
                continue
            kept = 0
            for rank, (token, score, origin) in enumerate(zip(tokens[b], scores[b], origins[b], strict=True)):
                row = b * self.size + int(origin)
                if int(token) == ids.eos:
                    if rank < self.size:
                        self.hyps[slot].add(group_ids[row].clone(), score.item(), cur_len)
                else:
                    next_scores[b, kept], next_tokens[b, kept], next_rows[b, kept] = score, token, row
                    kept += 1
                if kept == self.size:
                    break
            best = scores[b].max().item()
            self.finished[slot] = self.finished[slot] or self.hyps[slot].is_done(best, cur_len)
        return next_scores.view(-1), next_tokens.view(-1), next_rows.view(-1)

    def finalize(
        self, input_ids: torch.Tensor, beam_scores: torch.Tensor, max_length: int, ids: _Ids
    ) -> torch.Tensor:
        """The best hypothesis of each sentence over its groups, padded, end-of-text after
        the shorter ones."""
        for slot, hyps in enumerate(self.hyps):
            if not self.finished[slot]:
                for row in range(slot * self.size, (slot + 1) * self.size):
                    hyps.add(input_ids[row], beam_scores[row].item(), input_ids.shape[-1])
        best = []
        for b in range(self.batch):
            candidates = [c for h in self.hyps[b * self.groups : (b + 1) * self.groups] for c in h.beams]
            best.append(sorted(candidates, key=lambda c: c[0])[-1][1])
        width = min(max(len(h) for h in best) + 1, max_length)
        decoded = input_ids.new_full((self.batch, width), ids.pad)
        for i, hyp in enumerate(best):
            decoded[i, : len(hyp)] = hyp
            if len(hyp) < width:
                decoded[i, len(hyp)] = ids.eos
        return decoded


def _beam_search(model: Captioner, images: torch.Tensor, opts: GenerationOptions, ids: _Ids) -> torch.Tensor:
    """open_clip's ``_generate_beamsearch``: ``num_beam_groups`` groups of beams per image,
    scored by summed (processed) logits; stops when every group is done or at ``seq_len``."""
    batch, beams, groups = images.shape[0], opts.num_beams, opts.num_beam_groups
    size = beams // groups
    _, image_tokens = model.encode_image_tokens(torch.repeat_interleave(images, beams, dim=0))
    input_ids = torch.full((batch * beams, 1), ids.sot, dtype=torch.long, device=images.device)
    scorer = _BeamScorer(batch, groups, size)
    beam_scores = torch.full((batch, beams), -1e9, dtype=torch.float, device=images.device)
    beam_scores[:, ::size] = 0  # one live beam per group at the start
    beam_scores = beam_scores.view(-1)
    while True:
        current = torch.zeros(batch * beams, dtype=torch.long, device=images.device)
        logits = model.next_token_logits(input_ids, image_tokens)
        for group in range(groups):
            rows = [b * beams + i for b in range(batch) for i in range(group * size, (group + 1) * size)]
            group_ids = input_ids[rows]
            scores = _process(group_ids, logits[rows], opts, ids.eos)
            vocab = scores.shape[-1]
            scores = (scores + beam_scores[rows].unsqueeze(-1)).view(batch, size * vocab)
            top_scores, top = torch.topk(scores, 2 * size, dim=1, largest=True, sorted=True)
            next_scores, next_tokens, sources = scorer.process(
                group_ids, top_scores, top % vocab, torch.div(top, vocab, rounding_mode="floor"),
                group, ids,
            )  # fmt: skip
            beam_scores[rows] = next_scores
            input_ids[rows] = group_ids[sources]
            current[rows] = next_tokens
        input_ids = torch.cat([input_ids, current.unsqueeze(-1)], dim=-1)
        if scorer.done or input_ids.shape[-1] >= opts.seq_len:
            break
    return scorer.finalize(input_ids, beam_scores, opts.seq_len, ids)
