"""WebDataset tar shards (``key.jpg``/``key.png`` + ``key.txt``) as an iterable data source.

``build(ctx)`` returns a :class:`WebDatasetSource` streaming ``cfg.path``: a brace
pattern (``"data/shard-{000000..000099}.tar"``, ``::`` joins several) or a list of them.
Shards are read with the ``webdataset`` library (``tarfile_to_samples``, ``shuffle``,
``ResampledShards``).

``cfg.options`` (:class:`Options`):

* ``resampled`` (``False``): draw shards with replacement, independently per rank and
  worker (``webdataset.ResampledShards``), an endless stream; for multi-node training where
  shards cannot be split evenly. Bound it with ``samples_per_epoch``.
* ``samples_per_epoch`` (``None``): samples per rank per epoch (``None`` or bad-sample
  ``None`` items included), split evenly across DataLoader workers (rounded up to a
  multiple of ``num_workers``). Without resampling, a
  rank cycles through its shards until the quota is met, so all ranks yield the same count.
* ``shuffle_buffer`` (``1000``): sample shuffle buffer size (0 or 1: no shuffling);
  ``shard_shuffle`` (``True``): shuffle the shard order each epoch (not resampled).
* ``image_keys`` (``["jpg", "jpeg", "png", "webp"]``), ``caption_keys``
  (``["txt", "text", "caption"]``): tar member extensions, first present one wins.
* ``draft``: decode JPEGs at reduced size, >= ``cfg.image_size`` (lossy, faster).

Without resampling, shards are split by rank (``shards[rank::world_size]``) and then by
DataLoader worker; a rank with fewer shards than workers has each worker read all of the
rank's shards and keep every ``num_workers``-th sample instead. All randomness derives from
``(seed, epoch, pass, rank, worker)``, where ``pass`` counts the iterations started on this
copy of the dataset: each epoch gets new shard orders and shuffles both with non-persistent
DataLoader workers (via :meth:`WebDatasetSource.set_epoch`, which they see) and with
persistent ones (which never see ``set_epoch``, but count their passes).

Items are ``(image, tokens)`` or ``None`` for a bad sample (corrupt/missing image, missing or
empty caption), logged once by key and shard on the ``clipforge.data`` logger and counted in
``dataset.skipped`` (per worker). Unreadable shards or tar members are logged and skipped.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import get_worker_info

from ..configs import ConfigError
from ..preprocess import ImageDecodeError
from ..preprocess.image_io import decode_image
from .folder import stable_hash
from .sources import BuildContext, source_options
from .streaming import StreamingSource
from .tabular import BadSampleLog, Sample, Tokenize, Transform, caption_problem, to_tokens

DEFAULT_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
DEFAULT_CAPTION_KEYS = ("txt", "text", "caption")


def expand_shards(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard URLs from a brace pattern (``::`` joins several) or a list of them."""
    from webdataset.shardlists import expand_urls

    items = [path] if isinstance(path, str | os.PathLike) else list(path)
    urls = [url for item in items for url in expand_urls(os.fspath(item))]
    if not urls:
        raise ValueError(f"no shards in {path!r}")
    return urls


def decode_image_bytes(data: bytes, sample_id: str, min_size: int | None = None) -> Any:
    """Fully decode an encoded image, or raise :class:`ImageDecodeError` naming the sample."""
    if not data:
        raise ImageDecodeError(sample_id, "empty image data")
    return decode_image(io.BytesIO(data), sample_id, min_size=min_size)


@dataclass
class Options:
    """``data.options`` of the ``webdataset`` kind (see the module docstring)."""

    resampled: bool = False
    samples_per_epoch: int | None = None
    shuffle_buffer: int = 1000
    shard_shuffle: bool = True
    image_keys: str | list[str] = ";".join(DEFAULT_IMAGE_KEYS)  # a list or "jpg;png"
    caption_keys: str | list[str] = ";".join(DEFAULT_CAPTION_KEYS)
    draft: bool = False  # decode JPEGs at reduced size (>= data.image_size)

    def __post_init__(self) -> None:
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise ConfigError(
                f"data.options.samples_per_epoch must be >= 1, got {self.samples_per_epoch}"
            )
        if self.shuffle_buffer < 0:
            raise ConfigError(
                f"data.options.shuffle_buffer must be >= 0, got {self.shuffle_buffer}"
            )


class WebDatasetSource(StreamingSource):
    """Streams ``(image, tokens)`` (or ``None``) from WebDataset tar shards."""

    def __init__(
        self,
        urls: Sequence[str],
        transform: Transform,
        tokenize: Tokenize,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        resampled: bool = False,
        samples_per_epoch: int | None = None,
        shuffle_buffer: int = 1000,
        shard_shuffle: bool = True,
        image_keys: Sequence[str] = DEFAULT_IMAGE_KEYS,
        caption_keys: Sequence[str] = DEFAULT_CAPTION_KEYS,
        min_size: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if not resampled and len(urls) < world_size:
            raise ValueError(
                f"{len(urls)} shard(s) cannot be split over {world_size} ranks; "
                f"use more shards or options['resampled'] = True"
            )
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.urls = list(urls)
        self.transform = transform
        self.tokenize = tokenize
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.resampled = resampled
        self.samples_per_epoch = samples_per_epoch
        self.shuffle_buffer = shuffle_buffer
        self.shard_shuffle = shard_shuffle
        self.image_keys = tuple(k.lower() for k in image_keys)
        self.caption_keys = tuple(k.lower() for k in caption_keys)
        self.min_size = min_size
        self.epoch = 0
        self._passes = 0  # __iter__ calls on this copy: persistent workers never see set_epoch
        self._log = BadSampleLog()

    @property
    def skipped(self) -> int:
        """Bad samples and unreadable shard members met so far by this process."""
        return self._log.skipped

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shard order / resampling and shuffle seeds."""
        self.epoch = epoch

    def _epoch_seed(self) -> int:
        return stable_hash(stable_hash(self.seed, self.epoch), self._passes)

    def rank_shards(self) -> list[str]:
        """This rank's shards for the current epoch and pass (not resampled)."""
        urls = list(self.urls)
        if self.shard_shuffle:
            random.Random(self._epoch_seed()).shuffle(urls)
        return urls[self.rank :: self.world_size]

    def _handler(self, exn: Exception) -> bool:
        """webdataset error handler: log the unreadable shard/member and keep going."""
        # webdataset appends (stream, url) to the exception's args
        where = [a for a in exn.args[1:] if isinstance(a, str)]
        if isinstance(exn, OSError) and exn.strerror:
            message = exn.strerror
        else:
            message = exn.args[0] if exn.args else ""
        self._log.skip(where[-1] if where else "<shard>", f"{type(exn).__name__}: {message}")
        return True

    def _read(self, urls: Iterator[str], give_up_after: int | None) -> Iterator[dict[str, Any]]:
        """Samples of the shards in ``urls``, in order; unreadable members are skipped.

        ``give_up_after``: raise once that many consecutive shards gave no sample (an
        endless shard stream over unreadable data would otherwise spin forever).
        """
        import webdataset as wds

        empty_run = 0
        for url in urls:
            count = 0
            for sample in wds.tarfile_to_samples(handler=self._handler)(iter([{"url": url}])):  # pyright: ignore[reportAttributeAccessIssue]  (webdataset exports lazily)
                count += 1
                yield sample
            empty_run = 0 if count else empty_run + 1
            if give_up_after is not None and empty_run >= give_up_after:
                raise RuntimeError(
                    f"no readable samples in {empty_run} consecutive shards (last: {url!r}); "
                    f"see the warnings on the 'clipforge.data' logger"
                )

    def _samples(self, worker: int, num_workers: int) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        epoch_seed = self._epoch_seed()
        if self.resampled:
            shards = wds.ResampledShards(  # pyright: ignore[reportAttributeAccessIssue]  (webdataset exports lazily)
                self.urls,
                seed=stable_hash(epoch_seed, self.rank),
                worker_seed=lambda: worker,
                deterministic=True,
            )
            urls = (shard["url"] for shard in shards)
            samples = self._read(urls, give_up_after=max(20, 4 * len(self.urls)))
        else:
            mine = self.rank_shards()
            keep_every = 1
            if len(mine) >= num_workers:
                mine = mine[worker::num_workers]
            else:  # fewer shards than workers: every worker reads all, keeps a slice
                keep_every = num_workers
            if self.samples_per_epoch is not None:  # cycle until the quota is met
                samples = self._read(itertools.cycle(mine), give_up_after=len(mine))
            else:
                samples = self._read(iter(mine), give_up_after=None)
            if keep_every > 1:
                samples = itertools.islice(samples, worker, None, keep_every)
        if self.shuffle_buffer > 1:
            stream_seed = stable_hash(stable_hash(epoch_seed, self.rank), worker)
            shuffle = wds.shuffle(  # pyright: ignore[reportAttributeAccessIssue]  (webdataset exports lazily)
                self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), seed=stream_seed
            )
            samples = shuffle(iter(samples))
        return samples

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        samples = self._samples(worker, num_workers)
        self._passes += 1
        if self.samples_per_epoch is not None:
            quota = math.ceil(self.samples_per_epoch / num_workers)
            samples = itertools.islice(samples, quota)
        for sample in samples:
            yield self.decode(sample)

    def decode(self, sample: dict[str, Any]) -> Sample:
        """One webdataset sample dict -> ``(image, tokens)``, or ``None`` (logged) if bad."""
        sid = f"{sample.get('__key__')!r} in {sample.get('__url__')!r}"
        raw_caption = next((sample[k] for k in self.caption_keys if k in sample), None)
        if isinstance(raw_caption, bytes):
            try:
                raw_caption = raw_caption.decode("utf-8")
            except UnicodeDecodeError:
                self._log.skip(sid, "caption is not valid UTF-8")
                return None
        problem = caption_problem(raw_caption)
        data = next((sample[k] for k in self.image_keys if k in sample), None)
        if problem is None and data is None:
            problem = f"no image (looked for {', '.join(self.image_keys)})"
        if problem is not None or data is None or raw_caption is None:
            self._log.skip(sid, problem or "no caption")
            return None
        try:
            image = self.transform(decode_image_bytes(data, sid, self.min_size))
        except (ImageDecodeError, OSError) as exc:
            self._log.skip(sid, getattr(exc, "reason", None) or str(exc))
            return None
        return image, to_tokens(self.tokenize, raw_caption)

    def __repr__(self) -> str:
        mode = "resampled" if self.resampled else f"rank {self.rank}/{self.world_size}"
        return f"{type(self).__name__}({len(self.urls)} shards, {mode})"


def build(ctx: BuildContext) -> WebDatasetSource:
    """A :class:`WebDatasetSource` for ``cfg.path`` (see the module docstring for options)."""
    cfg = ctx.cfg
    opts: Options = source_options(cfg, "webdataset", what="webdataset option")
    keys = {
        name: value.split(";") if isinstance(value, str) else list(value)
        for name, value in (("image_keys", opts.image_keys), ("caption_keys", opts.caption_keys))
    }
    return WebDatasetSource(
        expand_shards(cfg.path),
        ctx.transform,
        ctx.tokenize,
        seed=ctx.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        resampled=opts.resampled,
        samples_per_epoch=opts.samples_per_epoch,
        shuffle_buffer=opts.shuffle_buffer,
        shard_shuffle=opts.shard_shuffle,
        min_size=cfg.image_size if opts.draft else None,
        **keys,
    )


__all__ = ["Options", "WebDatasetSource", "build", "decode_image_bytes", "expand_shards"]
