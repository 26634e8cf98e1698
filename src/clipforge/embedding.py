"""Batch embedding of images and texts that streams through a DataLoader and survives bad files.

Images are decoded (:func:`clipforge.preprocess.load_image`) and preprocessed
(``model.image_transform``) inside DataLoader workers. An input that cannot be read
(missing, empty, not an image, truncated, corrupt, a decompression bomb, ...) becomes a
sentinel instead of an exception; the collate function drops it, and the caller gets it
back in ``failures`` as ``(path, reason)`` while every good input is embedded.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar, cast

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from .errors import UsageError
from .models.protocols import ClipModel
from .preprocess import ImageDecodeError, Preprocess, load_image
from .quantization import for_precision
from .runtime import Precision, autocast, freeze_inherited_heap

ImageInput = str | os.PathLike | Image.Image | torch.Tensor
"""One image: a file path, a PIL image, or an already preprocessed ``(3, H, W)`` tensor."""
Images = Sequence[ImageInput] | torch.Tensor
"""Several images: a sequence of :data:`ImageInput`, or an ``(N, 3, H, W)`` tensor."""
BatchCallback = Callable[[list[int], torch.Tensor], None]
ImageLoader = Callable[[str | os.PathLike], Image.Image]
"""Decodes a path to a PIL image (picklable for DataLoader workers); raises
:class:`~clipforge.preprocess.ImageDecodeError` for an unreadable file."""


class TextTruncatedWarning(UserWarning):
    """Some texts were longer than the model's context and were cut."""


@dataclass
class EmbeddingResult:
    """Embeddings of the inputs that could be read, plus a report of those that could not.

    Attributes:
        embeddings: float32 ``(N_ok, D)`` array, one row per readable input, in input order.
        paths: the path of each embedded input (``None`` for PIL images / tensors).
        indices: int64 ``(N_ok,)`` positions of the embedded inputs in the input sequence.
        failures: ``(path, reason)`` for every input that could not be read, in input order.
    """

    embeddings: np.ndarray
    paths: list[str | None]
    indices: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)


class _Failed(NamedTuple):
    """Sentinel returned by the dataset for an input that could not be read."""

    index: int
    reason: str


def describe_input(item: object, index: int) -> str:
    """The path of a path-like input, else a short placeholder naming its position."""
    if isinstance(item, str | os.PathLike):
        return os.fspath(item)
    return f"<input {index}: {type(item).__name__}>"


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, ImageDecodeError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


def _to_pixels(
    item: ImageInput, transform: Callable, loader: ImageLoader | None = None
) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, Image.Image):
        return transform(item)
    if loader is not None:
        return transform(loader(item))
    if isinstance(transform, Preprocess):
        return transform(item)  # load_image inside; honours cfg.draft (JPEG DCT scaling)
    return transform(load_image(item))


class ImageDataset(Dataset):
    """Decode and preprocess one input per item; a failure yields a sentinel, never raises."""

    def __init__(
        self, items: Sequence[ImageInput], transform: Callable, loader: ImageLoader | None = None
    ) -> None:
        self.items = list(items)
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor] | _Failed:
        try:
            return index, _to_pixels(self.items[index], self.transform, self.loader)
        except Exception as exc:  # reported per input; a bad file must not stop the run
            return _Failed(index, _failure_reason(exc))


def _collate(
    batch: list[tuple[int, torch.Tensor] | _Failed],
) -> tuple[list[int], torch.Tensor | None, list[_Failed]]:
    """Drop failed items: (ok indices, stacked pixels or None, failures).

    ``default_collate`` stacks straight into shared memory inside a worker, so the batch
    reaches the main process without the extra copy pickling a private tensor costs.
    """
    ok = [b for b in batch if not isinstance(b, _Failed)]
    failed = [b for b in batch if isinstance(b, _Failed)]
    pixels = default_collate([p for _, p in ok]) if ok else None
    return [i for i, _ in ok], pixels, failed


def _init_worker(max_image_pixels: int | None, worker_id: int) -> None:
    freeze_inherited_heap(worker_id)
    # Workers started by spawn/forkserver would otherwise use PIL's default bomb limit.
    Image.MAX_IMAGE_PIXELS = max_image_pixels


def check_images(images: Images) -> list[ImageInput] | torch.Tensor:
    """Validate image inputs up front (programming errors raise; unreadable files do not)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise UsageError(f"an image tensor must be (N, 3, H, W), got {tuple(images.shape)}")
        return images
    if isinstance(images, str | os.PathLike | Image.Image):
        images = [images]
    items = list(images)
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            if item.ndim != 3 or item.shape[0] != 3:
                raise UsageError(f"image tensor {i} must be (3, H, W), got {tuple(item.shape)}")
        elif not isinstance(item, str | os.PathLike | Image.Image):
            raise TypeError(
                f"image {i}: expected a path, a PIL image or a tensor, got {type(item).__name__}"
            )
    return items


def _show_progress(progress: bool | None, n_batches: int) -> bool:
    if progress is None:
        return n_batches > 1 and sys.stderr.isatty()
    return bool(progress)


_M = TypeVar("_M", bound=nn.Module | ClipModel)


def _submodules(model: nn.Module | ClipModel) -> Iterator[nn.Module]:
    """Every submodule (a shared one once per reference): ``Module.modules()`` without
    the names it builds, ~3x faster."""
    stack = [cast(nn.Module, model)]
    while stack:
        module = stack.pop()
        yield module
        stack.extend(child for child in module._modules.values() if child is not None)


@contextlib.contextmanager
def eval_mode(model: _M) -> Iterator[_M]:
    """Put every submodule in eval mode, restoring each one's own flag afterwards.

    Only the modules in training mode are touched (none, for a model already in eval
    mode): ``Module.eval()`` would set the flag on all of them, ~3 ms for a CLIP model,
    which is most of the cost of encoding one short query."""
    training = [m for m in _submodules(model) if m.training]
    for module in training:
        object.__setattr__(module, "training", False)
    try:
        yield model
    finally:
        for module in training:
            object.__setattr__(module, "training", True)


def _image_device_dtype(model: ClipModel) -> tuple[torch.device, torch.dtype]:
    param = next(model.tower("image").parameters())
    return param.device, param.dtype


def _pixel_batches(
    model: ClipModel,
    images: list[ImageInput] | torch.Tensor,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    loader: ImageLoader | None = None,
) -> Iterator[tuple[list[int], torch.Tensor | None, list[_Failed]]]:
    n = len(images)
    if isinstance(images, torch.Tensor):
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield list(range(start, stop)), images[start:stop], []
        return
    batches = DataLoader(
        ImageDataset(images, model.image_transform, loader),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        worker_init_fn=functools.partial(_init_worker, Image.MAX_IMAGE_PIXELS),
    )
    yield from batches


def stream_image_embeddings(
    model: ClipModel,
    images: Images,
    on_batch: BatchCallback,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    normalize: bool = True,
    progress: bool | None = False,
    precision: Precision | None = None,
    loader: ImageLoader | None = None,
) -> list[tuple[int, str]]:
    """Embed ``images`` batch by batch, calling ``on_batch(indices, embeddings)`` for each.

    ``embeddings`` is a float32 tensor on the model's device (computed in eval mode under
    ``torch.inference_mode``, which is also active during the callback). ``precision``
    ("fp32", "bf16", "fp16") runs the model under autocast, "int8" an int8 copy of it (see
    :func:`clipforge.quantization.for_precision`). ``loader`` decodes file paths
    (default: :func:`clipforge.preprocess.load_image`; the index's opens phone formats and
    applies EXIF orientation). Returns the failures as ``(input index, reason)``, in input order.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise UsageError(f"num_workers must be >= 0, got {num_workers}")
    model, precision = for_precision(model, precision)
    items = check_images(images)
    n = len(items)
    failures: list[tuple[int, str]] = []
    if n == 0:
        return failures
    device, dtype = _image_device_dtype(model)
    show = _show_progress(progress, math.ceil(n / batch_size))

    with eval_mode(model), tqdm(total=n, unit="img", desc="embedding", disable=not show) as bar:
        for indices, pixels, failed in _pixel_batches(
            model, items, batch_size, num_workers, device, loader
        ):
            failures.extend((f.index, f.reason) for f in failed)
            if pixels is not None:
                with torch.inference_mode():
                    pixels = pixels.to(device=device, dtype=dtype, non_blocking=True)
                    with autocast(precision, device):
                        features = model.encode_image(pixels, normalize=normalize).float()
                    on_batch(indices, features)
            bar.update(len(indices) + len(failed))
    return failures


def embed_images(
    model: ClipModel,
    paths: Images,
    batch_size: int = 64,
    num_workers: int = 0,
    normalize: bool = True,
    progress: bool | None = False,
    precision: Precision | None = None,
) -> EmbeddingResult:
    """Embed image files (or PIL images / preprocessed tensors); report unreadable ones.

    Streams through a ``torch.utils.data.DataLoader`` with ``num_workers`` worker processes
    doing the decoding and preprocessing. Every readable input is embedded; every one that
    is not is listed in ``result.failures`` as ``(path, reason)``. ``normalize`` L2-normalises
    the embeddings. ``progress`` shows a tqdm bar (``None``: only on a terminal, > 1 batch).
    The model runs where its weights are (move it with ``model.to(device)``); ``precision``
    ("fp32", "bf16", "fp16") runs it under autocast without converting it.
    """
    items = check_images(paths)
    chunks: list[torch.Tensor] = []
    kept: list[int] = []

    def collect(indices: list[int], features: torch.Tensor) -> None:
        kept.extend(indices)
        chunks.append(features.cpu())

    failed = stream_image_embeddings(
        model,
        items,
        collect,
        batch_size=batch_size,
        num_workers=num_workers,
        normalize=normalize,
        progress=progress,
        precision=precision,
    )
    dim = model.config.embed_dim
    embeddings = torch.cat(chunks).numpy() if chunks else np.zeros((0, dim), dtype=np.float32)
    return EmbeddingResult(
        embeddings=embeddings,
        paths=[
            os.fspath(item) if isinstance(item, str | os.PathLike) else None
            for item in (items[i] for i in kept)
        ],
        indices=np.asarray(kept, dtype=np.int64),
        failures=[(describe_input(items[i], i), reason) for i, reason in failed],
    )


def _count_truncated(model: ClipModel, texts: list[str], tokens: torch.Tensor) -> int:
    """How many of ``texts`` did not fit the context (rows filled to the last position)."""
    count = 0
    for row in torch.nonzero(tokens[:, -1]).flatten().tolist():
        try:
            model.tokenize([texts[row]], truncate=False)
        except ValueError:
            count += 1
    return count


def encode_texts(
    model: ClipModel,
    texts: Sequence[str],
    batch_size: int = 256,
    normalize: bool = True,
    precision: Precision | None = None,
) -> torch.Tensor:
    """Texts → float32 ``(N, D)`` embeddings on the model's device, in batches, in eval mode.

    Texts longer than the model's context are cut (as CLIP does), with one warning giving
    their count. ``precision`` ("fp32", "bf16", "fp16") runs the model under autocast.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    model, precision = for_precision(model, precision)
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be strings")
    device = next(model.tower("text").parameters()).device
    if not texts:
        return torch.zeros((0, model.config.embed_dim), device=device)
    chunks, truncated = [], 0
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            tokens = model.tokenize(batch)
            truncated += _count_truncated(model, batch, tokens)
            with autocast(precision, device):
                chunks.append(model.encode_text(tokens.to(device), normalize=normalize).float())
    if truncated:
        warnings.warn(
            f"{truncated} of {len(texts)} texts are longer than the model's context of "
            f"{tokens.shape[1]} tokens and were truncated",
            TextTruncatedWarning,
            stacklevel=2,
        )
    return torch.cat(chunks)


def embed_texts(
    model: ClipModel,
    texts: Sequence[str],
    batch_size: int = 256,
    normalize: bool = True,
    precision: Precision | None = None,
) -> np.ndarray:
    """Texts → float32 ``(N, D)`` numpy embeddings (L2-normalised unless ``normalize=False``).

    See :func:`encode_texts` for truncation and ``precision``.
    """
    embeddings = encode_texts(model, texts, batch_size, normalize, precision)
    return embeddings.cpu().numpy()
