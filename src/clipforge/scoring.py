"""Image–text similarity, CLIPScore, and the CLIP paper's similarity heat-map."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .embedding import Images, check_images, embed_images, embed_texts
from .errors import UsageError
from .models import ClipModel
from .preprocess import ImageDecodeError, load_image
from .runtime import Precision

Thumbnail = str | os.PathLike | Image.Image | np.ndarray


Failures = list[tuple[str, str]]


def _image_embeddings(
    model: ClipModel,
    images: Images,
    batch_size: int,
    num_workers: int,
    precision: Precision | None,
    failures: Failures | None,
) -> np.ndarray:
    """Normalised embeddings of all images, one row per input (rows must pair up).

    Unreadable images raise (naming every one) unless ``failures`` is a list: then their
    rows are NaN and each is appended to it as ``(path, reason)``.
    """
    items = check_images(images)
    result = embed_images(
        model, items, batch_size=batch_size, num_workers=num_workers, precision=precision
    )
    if result.failures and failures is None:
        path, reason = result.failures[0]
        more = [p for p, _ in result.failures[1:]]
        raise ImageDecodeError(
            path,
            reason + (f" (and {len(more)} more unreadable: {', '.join(more)})" if more else ""),
        )
    embeddings = np.full((len(items), result.embeddings.shape[1]), np.nan, dtype=np.float32)
    embeddings[result.indices] = result.embeddings
    if failures is not None:
        failures.extend(result.failures)
    return embeddings


def similarity_matrix(
    model: ClipModel,
    images: Images,
    texts: Sequence[str],
    batch_size: int = 64,
    num_workers: int = 0,
    *,
    failures: Failures | None = None,
    precision: Precision | None = None,
) -> np.ndarray:
    """Cosine similarities, float32 ``(N_images, N_texts)``.

    ``images``: paths, PIL images, ``(3, H, W)`` tensors or an ``(N, 3, H, W)`` batch. An
    unreadable image raises :class:`~clipforge.preprocess.ImageDecodeError` naming every
    unreadable one, unless ``failures`` is a list: then, as in
    :func:`~clipforge.embedding.embed_images`, every other image is processed, the rows of
    unreadable ones are NaN, and each is appended to ``failures`` as ``(path, reason)``.
    ``precision`` ("fp32", "bf16", "fp16") runs the model under autocast.
    """
    image = _image_embeddings(model, images, batch_size, num_workers, precision, failures)
    text = embed_texts(model, texts, precision=precision)
    return image @ text.T


def clip_score(
    model: ClipModel,
    images: Images,
    texts: Sequence[str],
    weight: float = 100.0,
    batch_size: int = 64,
    num_workers: int = 0,
    *,
    failures: Failures | None = None,
    precision: Precision | None = None,
) -> np.ndarray:
    """CLIPScore of each pair ``(images[i], texts[i])``: ``max(weight * cos, 0)``, float32 ``(N,)``.

    With ``weight=100`` this is torchmetrics' ``CLIPScore`` scale; Hessel et al. (2021) use
    ``w=2.5``. The clamp is per pair, as in the paper (torchmetrics clamps only the mean;
    the two agree whenever no pair has a negative cosine). See :func:`mean_clip_score`.
    Unreadable images and ``failures``/``precision`` as in :func:`similarity_matrix` (the
    score of an unreadable image is NaN).
    """
    items = check_images(images)
    texts = [texts] if isinstance(texts, str) else list(texts)
    if len(items) != len(texts):
        raise UsageError(
            f"clip_score pairs images with texts: got {len(items)} images, {len(texts)} texts"
        )
    image = _image_embeddings(model, items, batch_size, num_workers, precision, failures)
    text = embed_texts(model, texts, precision=precision)
    cos = (image * text).sum(axis=1)
    return np.maximum(np.float32(weight) * cos, np.float32(0)).astype(np.float32)


def mean_clip_score(
    model: ClipModel,
    images: Images,
    texts: Sequence[str],
    weight: float = 100.0,
    batch_size: int = 64,
    num_workers: int = 0,
    *,
    failures: Failures | None = None,
    precision: Precision | None = None,
) -> float:
    """The mean of :func:`clip_score` over all (readable) pairs: the corpus-level CLIPScore."""
    scores = clip_score(
        model, images, texts, weight, batch_size, num_workers,
        failures=failures, precision=precision,
    )  # fmt: skip
    finite = scores[np.isfinite(scores)]
    return float(finite.mean()) if len(finite) else float("nan")


def _thumbnail(item: Thumbnail, size: int = 128) -> np.ndarray:
    """A square RGB uint8 thumbnail (centre crop) of a path, PIL image or HxW[x3] array."""
    if isinstance(item, np.ndarray):
        array = item
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
        image = Image.fromarray(array)
    elif isinstance(item, Image.Image):
        image = item
    else:
        image = load_image(item)
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))


def _checked_grid(
    sim: np.ndarray | torch.Tensor, images: Sequence[Thumbnail] | None, texts: Sequence[str]
) -> tuple[np.ndarray, list[Thumbnail]]:
    """``sim`` as a 2-D array and the column items, checked against ``texts``/``images``."""
    values = sim.detach().cpu().numpy() if isinstance(sim, torch.Tensor) else np.asarray(sim)
    if values.ndim != 2:
        raise UsageError(f"sim must be 2-D (images x texts), got shape {values.shape}")
    n_images, n_texts = values.shape
    if len(texts) != n_texts:
        raise UsageError(f"sim has {n_texts} text columns but {len(texts)} texts were given")
    items: list[Thumbnail] = (
        list(images) if images is not None else [str(i) for i in range(n_images)]
    )
    if len(items) != n_images:
        raise UsageError(f"sim has {n_images} image rows but {len(items)} images/labels were given")
    return values, items


def plot_similarity(
    sim: np.ndarray | torch.Tensor,
    images: Sequence[Thumbnail] | None,
    texts: Sequence[str],
    path: str | os.PathLike,
    title: str | None = "Cosine similarity between text and image features",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool | None = None,
    dpi: int = 100,
) -> Path:
    """Save a heat-map of an ``(N_images, N_texts)`` similarity matrix as a PNG.

    Drawn as in the CLIP paper/notebook: texts as rows, images as columns, each cell
    annotated with its value. ``images`` gives one entry per column: a ``str`` is a text
    label; a ``pathlib.Path``, PIL image or ``HxW[x3]`` array is drawn as a thumbnail
    above its column; ``None`` labels columns by index. ``vmin``/``vmax`` default to the
    data range; ``annotate`` (default: when the matrix has at most 400 cells) writes the
    values. Uses matplotlib's object API (no pyplot state). Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values, items = _checked_grid(sim, images, texts)
    n_images, n_texts = values.shape
    thumbs = {i: _thumbnail(x) for i, x in enumerate(items) if not isinstance(x, str)}
    labels = [x if isinstance(x, str) else "" for x in items]
    grid = values.T.astype(np.float64)  # texts as rows, images as columns
    finite = grid[np.isfinite(grid)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if annotate is None:
        annotate = grid.size <= 400

    text_width = max((len(t) for t in texts), default=0) * 0.07
    top = 1.2 if thumbs else 0.0
    fig = Figure(figsize=(max(4.0, 0.8 * n_images + text_width + 1.5), 0.6 * n_texts + top + 2.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    mappable = ax.imshow(grid, vmin=lo, vmax=hi, cmap="viridis", aspect="equal")
    fig.colorbar(mappable, ax=ax, fraction=0.03, pad=0.02)
    ax.set_yticks(range(n_texts), [str(t) for t in texts], fontsize=10)
    if any(labels):
        ax.set_xticks(range(n_images), labels, rotation=45, ha="right", fontsize=9)
    else:
        ax.set_xticks([])
    if annotate:
        mid = (lo + hi) / 2
        for (row, col), value in np.ndenumerate(grid):
            colour = "black" if value > mid else "white"
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    for col, thumb in thumbs.items():
        # Row 0 of the picture at the top; the y axis grows downwards (image origin).
        ax.imshow(thumb, extent=(col - 0.46, col + 0.46, -0.62, -1.54), origin="upper")
    ax.set_xlim(-0.5, n_images - 0.5)
    ax.set_ylim(n_texts - 0.5, -1.7 if thumbs else -0.5)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=12)
    out = Path(path)
    fig.savefig(out, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.2)
    return out
