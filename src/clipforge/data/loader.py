"""Training data: pluggable dataset builders and a resumable, infinite batch iterator.

A data ``kind`` maps to a typed options dataclass and a builder in the registry of
:mod:`clipforge.data.sources`, imported only when used, so optional dependencies
(webdataset, pyarrow, ...) are needed only by the kinds that use them. Every builder has
the signature::

    build(ctx: BuildContext) -> Dataset  # ctx: cfg, transform, tokenize, seed, rank, world_size

and returns items ``(image (3, H, W) float tensor, tokens (L,) int64)`` or ``None`` for a
sample that could not be read (the dataset logs its id). :func:`collate_skip_bad` drops the
``None`` items and counts them.

Resumption: for map-style datasets the order is a function of ``(seed, epoch)`` only
(:class:`StepBatchSampler`), so the batch of any step is computed by index arithmetic
and a resumed run reads exactly the samples the uninterrupted run would have read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from ..runtime import freeze_inherited_heap
from ..tokenizer import get_tokenizer
from .sources import DATA_SOURCES, BuildContext, resolve_builder
from .streaming import StreamingSource

if TYPE_CHECKING:
    from .data_config import DataConfig

__all__ = [
    "DATASET_BUILDERS",
    "Batch",
    "SafeDataset",
    "StepBatchSampler",
    "TokenizeFn",
    "build_dataset",
    "build_train_loader",
    "collate_skip_bad",
    "resolve_builder",
]

logger = logging.getLogger("clipforge.data")

#: data kind → ``"module:function"`` builder of the built-in kinds (a snapshot kept for
#: compatibility; the registry is :data:`clipforge.data.sources.DATA_SOURCES`).
DATASET_BUILDERS: dict[str, str] = {
    name: source.builder for name, source in DATA_SOURCES.items() if isinstance(source.builder, str)
}

#: ``(images (B, 3, H, W), tokens (B, L), number of skipped bad samples)``
Batch = tuple[torch.Tensor, torch.Tensor, int]
Item = tuple[torch.Tensor, torch.Tensor] | None


class TokenizeFn:
    """Picklable ``caption -> (context_length,)`` int64 tokens with the model's tokenizer.

    ``tokenizer`` is the model's own (:meth:`clipforge.models.CLIP.get_tokenizer`, e.g. a
    SigLIP checkpoint's SentencePiece vocabulary); ``None`` or CLIP's shared BPE tokenizer
    is rebuilt in each worker process instead of being pickled.
    """

    def __init__(self, context_length: int, tokenizer: Any = None) -> None:
        self.context_length = context_length
        self._tokenizer: Any = tokenizer

    def __call__(self, text: str) -> torch.Tensor:
        if self._tokenizer is None:

            self._tokenizer = get_tokenizer()
        return self._tokenizer(text, context_length=self.context_length, truncate=True)[0]

    def __getstate__(self) -> dict[str, Any]:

        shared = self._tokenizer is None or self._tokenizer is get_tokenizer()
        return {"context_length": self.context_length,
                "_tokenizer": None if shared else self._tokenizer}  # fmt: skip


class SafeDataset(Dataset):
    """Map-style wrapper: an item that raises becomes ``None`` (logged with its index)."""

    def __init__(self, dataset: Dataset, name: str = "dataset") -> None:
        self.dataset, self.name = dataset, name

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Item:
        try:
            return self.dataset[index]
        except Exception as err:  # noqa: BLE001 - any decode/render error skips the sample
            logger.warning(
                "%s: skipping sample %d: %s: %s", self.name, index, type(err).__name__, err
            )
            return None


def collate_skip_bad(batch: Sequence[Item]) -> Batch:
    """Stack the good ``(image, tokens)`` items; return them with the count of ``None`` items."""
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.zeros(0, 3, 1, 1), torch.zeros(0, 1, dtype=torch.long), skipped
    images = torch.stack([image for image, _ in good])
    tokens = torch.stack([torch.as_tensor(t, dtype=torch.long) for _, t in good])
    return images, tokens, skipped


class StepBatchSampler(Sampler[list[int]]):
    """Infinite per-step index batches for one rank, resumable from any step.

    The global sample stream is the concatenation of per-epoch permutations of
    ``range(n)`` (permutation ``e`` seeded by ``(seed, e)``). Step ``s`` covers stream
    positions ``[s * B, (s + 1) * B)``; rank ``r`` of ``W`` takes the ``r``-th of ``W``
    equal slices. Starting at ``start_step`` costs nothing: positions are computed.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        if n < 1:
            raise ValueError("the training dataset is empty")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by world size {world_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.local_batch = batch_size // world_size
        self._perms: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (a function of ``(seed, epoch)`` only)."""
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def indices(self, step: int) -> list[int]:
        """Dataset indices of this rank's share of step ``step``."""
        start = step * self.batch_size + self.rank * self.local_batch
        return [
            int(self.permutation(pos // self.n)[pos % self.n])
            for pos in range(start, start + self.local_batch)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.indices(step)
            step += 1


def build_dataset(
    cfg: DataConfig, model: torch.nn.Module, *, seed: int, rank: int = 0, world_size: int = 1
) -> Dataset:
    """The dataset of ``cfg.kind``, with ``model``'s preprocessing and tokenizer."""
    builder = resolve_builder(cfg.kind)
    tokenize = TokenizeFn(
        model.config.text.context_length,  # type: ignore[union-attr]
        model.get_tokenizer(),  # type: ignore[operator]
    )
    transform = model.image_transform  # type: ignore[assignment]
    return builder(BuildContext(cfg, transform, tokenize, seed, rank, world_size))  # type: ignore[arg-type]


def _loader_kwargs(cfg: DataConfig, seed: int, start_step: int) -> dict[str, Any]:
    return {
        "collate_fn": collate_skip_bad,
        "num_workers": cfg.num_workers,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": cfg.num_workers > 0,
        "worker_init_fn": freeze_inherited_heap,
        # a private generator: creating the loader never consumes the global torch RNG
        "generator": torch.Generator().manual_seed(seed * 7919 + start_step),
    }


def _iterable_batches(
    dataset: IterableDataset, cfg: DataConfig, local_batch: int, seed: int, start_step: int
) -> Iterator[Batch]:
    """Endless batches of an iterable dataset; ``start_step`` batches are skipped."""
    streaming = dataset if isinstance(dataset, StreamingSource) else None
    if start_step and streaming is not None and streaming.supports_start:
        streaming.set_start(start_step * local_batch)
        to_skip = 0
    else:
        to_skip = start_step
        if to_skip:
            logger.warning("iterable dataset: skipping %d batches by reading them", to_skip)
    loader = DataLoader(dataset, batch_size=local_batch, **_loader_kwargs(cfg, seed, start_step))
    epoch = 0
    while True:
        if streaming is not None:
            streaming.set_epoch(epoch)
        produced = 0
        for batch in loader:
            produced += 1
            if to_skip:
                to_skip -= 1
                continue
            yield batch
        if produced == 0:
            raise RuntimeError("the training dataset produced no batches")
        epoch += 1


def build_train_loader(
    cfg: DataConfig,
    model: torch.nn.Module,
    *,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    start_step: int = 0,
) -> Iterator[Batch]:
    """Endless ``(images, tokens, n_skipped)`` batches for this rank, from ``start_step``.

    ``batch_size`` is global: each rank receives ``batch_size // world_size`` samples
    (fewer when bad samples are dropped).
    """
    dataset = build_dataset(cfg, model, seed=seed, rank=rank, world_size=world_size)
    local_batch = batch_size // world_size
    if isinstance(dataset, IterableDataset):
        return _iterable_batches(dataset, cfg, local_batch, seed, start_step)
    sampler = StepBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        start_step=start_step,
    )
    return iter(DataLoader(dataset, batch_sampler=sampler, **_loader_kwargs(cfg, seed, start_step)))
