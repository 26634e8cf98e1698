"""Class-per-folder image trees (``root/<class_name>/**/*.jpg``) captioned from templates.

``build(ctx)`` scans ``cfg.path`` and returns an :class:`ImageFolderCaptions`. Every
sub-directory of the root (hidden ones excluded) is a class, in sorted order; its images are
found recursively (extensions ``.jpg .jpeg .png .webp .bmp .gif .tif .tiff``, any case).
The caption of image ``i`` is one template with ``{c}`` replaced by its class name, chosen
deterministically from ``(seed, i)``: the same seed gives the same captions in every process
and epoch; pass a different seed (e.g. ``seed + epoch``) for fresh choices.

``cfg.options`` (:class:`Options`):

* ``templates``: a template-set name (``"openai_imagenet"``, the default; ``"simple"``, ...),
  a template file, one template or a list; see :func:`clipforge.templates.get_templates`;
* ``classnames``: display names, a dict ``{folder: name}`` or a list in sorted-folder order
  (default: the folder name with ``_`` replaced by a space);
* ``draft``: decode JPEGs at reduced size, >= ``cfg.image_size`` (lossy, faster).

Items are ``(image, tokens)`` or ``None`` for an unreadable image (logged once by path,
counted in ``dataset.skipped``). ``rank``/``world_size`` are not used: shard with a sampler.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..templates import get_templates
from .samples import LabelledImages
from .sources import BuildContext, source_options
from .tabular import ImageCaptionDataset, Tokenize, Transform

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
DEFAULT_TEMPLATES = "openai_imagenet"

_MASK64 = (1 << 64) - 1


def stable_hash(seed: int, index: int) -> int:
    """A stable 64-bit hash of ``(seed, index)`` (splitmix64 finaliser)."""
    x = ((seed & _MASK64) * 0x9E3779B97F4A7C15 + (index & _MASK64) + 0x632BE59BD9B4E019) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def template_index(seed: int, index: int, n_templates: int) -> int:
    """The template chosen for sample ``index`` under ``seed`` (in ``[0, n_templates)``)."""
    return stable_hash(seed, index) % n_templates


@dataclass
class Options:
    """``data.options`` of the ``folder`` kind (see the module docstring)."""

    templates: str | list[str] = DEFAULT_TEMPLATES
    classnames: dict[str, str] | list[str] | None = None
    draft: bool = False


def is_image_file(name: str | os.PathLike) -> bool:
    """Whether ``name`` has an image extension (:data:`IMAGE_EXTENSIONS`, any case)."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_EXTENSIONS


def list_images(directory: str | os.PathLike) -> list[str]:
    """Image files under ``directory``, recursively (hidden entries skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            os.path.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and is_image_file(f)
        )
    return sorted(found)


def scan_folder(root: str | os.PathLike) -> tuple[list[str], list[tuple[str, int]]]:
    """``(class folders, [(image path, class index), ...])``, both in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {os.fspath(root)!r} is not a directory")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    samples: list[tuple[str, int]] = []
    for label, folder in enumerate(folders):
        samples.extend((path, label) for path in list_images(root / folder))
    if not samples:
        raise ValueError(
            f"no images in {os.fspath(root)!r}: expected root/<class_name>/*.jpg "
            f"(extensions {sorted(IMAGE_EXTENSIONS)})"
        )
    return folders, samples


def class_names(folders: list[str], names: Mapping[str, str] | Sequence[str] | None) -> list[str]:
    if names is None:
        return [f.replace("_", " ") for f in folders]
    if isinstance(names, Mapping):
        return [names.get(f, f.replace("_", " ")) for f in folders]
    names = list(names)
    if len(names) != len(folders):
        raise ValueError(f"{len(names)} classnames given for {len(folders)} class folders")
    return names


class ImageFolderCaptions(ImageCaptionDataset):
    """Images from class folders, captioned with a deterministic template per sample.

    Attributes:
        classnames: display name of each class (index = label).
        folders: the class folder names, sorted.
        samples: ``(path, label)`` per image; ``targets``: the labels.
        templates: the caption templates (each containing ``{c}``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Transform,
        tokenize: Tokenize,
        templates: str | Sequence[str] = DEFAULT_TEMPLATES,
        classnames: Mapping[str, str] | Sequence[str] | None = None,
        seed: int = 0,
        min_size: int | None = None,
    ) -> None:
        super().__init__(transform, tokenize, root=None, min_size=min_size)
        self.folder_root = os.fspath(root)
        self.folders, self.samples = scan_folder(root)
        self.targets = [label for _, label in self.samples]
        self.classnames = class_names(self.folders, classnames)
        self.templates = get_templates(templates)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, index: int) -> str:
        return self.samples[index][0]

    def caption(self, index: int) -> str:
        template = self.templates[template_index(self.seed, index, len(self.templates))]
        return template.replace("{c}", self.classnames[self.samples[index][1]])

    def sample_id(self, index: int, path: str | None) -> str:
        return repr(path)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.folder_root!r}, {len(self)} images, "
            f"{len(self.classnames)} classes, {len(self.templates)} templates)"
        )


def build(ctx: BuildContext) -> ImageFolderCaptions:
    """An :class:`ImageFolderCaptions` for ``cfg.path`` (see the module docstring)."""
    cfg = ctx.cfg  # map-style: sharding belongs to the sampler
    opts: Options = source_options(cfg, "folder", what="folder data option")
    return ImageFolderCaptions(
        cfg.path,
        ctx.transform,
        ctx.tokenize,
        templates=opts.templates,
        classnames=opts.classnames,
        seed=ctx.seed,
        min_size=cfg.image_size if opts.draft else None,
    )


__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderCaptions",
    "Options",
    "build",
    "class_names",
    "is_image_file",
    "list_images",
    "scan_folder",
    "template_index",
]


def labelled_images(
    data: Any, *, limit: int | None, n_per_class: int = 2, n_classes: int | None = None
) -> LabelledImages:
    """A class folder as labelled images (class names: the folder names, or the options')."""
    opts = data.typed_options()
    folders, samples = scan_folder(data.path)
    names = class_names(folders, opts.classnames)
    labels = np.asarray([y for _, y in samples], dtype=np.int64)
    return LabelledImages([p for p, _ in samples], labels, names, opts.templates)
