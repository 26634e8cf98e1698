"""Tar archives of a class folder or an image-caption table, read through a cache directory.

``build(ctx)`` extracts ``cfg.path`` (``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2``,
``.tar.xz``) once into a cache directory (never next to the archive) and hands the inner
dataset to the ``folder`` or ``csv`` source. ``cfg.options`` (:class:`Options`):

* ``inner``: the path inside the archive of a class folder or a table file (default: found
  by descending single sub-directories; a directory holding a ``.csv``/``.tsv``/``.parquet``
  file is that table, with image paths relative to it);
* ``cache_dir``: where archives are extracted (default ``$CLIPFORGE_CACHE/archives`` or
  ``~/.cache/clipforge/archives``); one sub-directory per archive (path, size, mtime);
* ``max_bytes`` / ``max_members``: extraction caps (default 32 GiB of file bytes, 2,000,000
  members); extraction stops before a member that passes one, and a failed extraction
  leaves nothing behind;
* ``source``: options of the inner ``folder`` or ``csv`` source.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configs import ConfigError
from ..errors import InputError
from .data_config import DataConfig
from .sources import BuildContext, get_data_source, resolve_builder, source_options

__all__ = [
    "ArchiveLimitError",
    "Limits",
    "Options",
    "build",
    "extract_archive",
    "inner_config",
    "locate",
]

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq")
DEFAULT_MAX_BYTES = 32 * 2**30  # 32 GiB of regular-file bytes once extracted
DEFAULT_MAX_MEMBERS = 2_000_000


@dataclass
class Options:
    """``data.options`` of the ``archive`` kind (see the module docstring)."""

    inner: str | None = None
    cache_dir: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS
    source: dict[str, Any] = field(default_factory=dict)


def default_cache_dir() -> Path:
    """``$CLIPFORGE_CACHE/archives`` or ``~/.cache/clipforge/archives``."""
    base = os.environ.get("CLIPFORGE_CACHE") or Path.home() / ".cache" / "clipforge"
    return Path(base) / "archives"


@dataclass(frozen=True)
class Limits:
    """Extraction caps: total bytes of regular files and number of members."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS


class ArchiveLimitError(InputError):
    """An archive holds more members or bytes than the extraction caps allow."""


def _archive_error(path: Path, err: BaseException) -> InputError:
    return InputError(f"archive {os.fspath(path)!r}: cannot extract: {err}")


def _extract_capped(tar: tarfile.TarFile, staging: Path, path: Path, limits: Limits) -> None:
    """Extract member by member, refusing one that would pass a cap before writing it."""
    total = 0
    for members, member in enumerate(tar, start=1):
        total += max(member.size, 0) if member.isfile() else 0
        if members > limits.max_members:
            raise ArchiveLimitError(
                f"archive {os.fspath(path)!r}: more than {limits.max_members} members "
                "(data.options.max_members)"
            )
        if total > limits.max_bytes:
            raise ArchiveLimitError(
                f"archive {os.fspath(path)!r}: more than {limits.max_bytes} bytes "
                f"once extracted (at {member.name!r}; data.options.max_bytes)"
            )
        tar.extract(member, staging, filter="data")


def extract_archive(
    path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
    limits: Limits | None = None,
) -> Path:  # fmt: skip
    """The directory ``path`` is extracted to (extracted now unless already there).

    Extraction stops with :class:`ArchiveLimitError` before a member that would pass
    ``limits``; on any failure the staging directory is removed."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"archive {os.fspath(path)!r}: no such file")
    stat = path.stat()
    key = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / f"{path.name.split('.')[0]}-{key}"
    if (target / ".complete").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
    try:
        with tarfile.open(path, "r|*") as tar:
            _extract_capped(tar, staging, path, limits or Limits())
        (staging / ".complete").touch()
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, tarfile.TarError | EOFError | OSError | zlib.error):
            raise _archive_error(path, err) from None
        raise
    return target


def _visible(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def locate(root: Path, inner: str | None) -> tuple[str, Path]:
    """``("folder" | "csv", path)`` of the dataset inside an extracted archive."""
    if inner is not None:
        target = root / inner
        if not target.exists():
            raise ConfigError(f"data.options.inner {inner!r}: not in the archive")
        if target.is_file():
            return "csv", target
    else:
        target = root
        while len(entries := _visible(target)) == 1 and entries[0].is_dir():
            target = entries[0]
    tables = [p for p in _visible(target) if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES]
    if len(tables) == 1:
        return "csv", tables[0]
    return "folder", target


def inner_config(cfg: Any) -> Any:
    """The ``folder``/``csv`` :class:`DataConfig` of the dataset inside archive ``cfg``."""

    opts: Options = source_options(cfg, "archive", what="archive data option")
    kind, path = locate(
        extract_archive(cfg.path, opts.cache_dir, Limits(opts.max_bytes, opts.max_members)),
        opts.inner,
    )
    options = dict(opts.source)
    if kind == "csv":
        options.setdefault("root", os.fspath(path.parent))
        options["confine"] = True  # rows may not name files outside the archive
    return DataConfig(
        kind=kind,
        path=os.fspath(path),
        options=options,
        image_size=cfg.image_size,
        num_workers=cfg.num_workers,
    )


def build(ctx: BuildContext) -> Any:
    """The inner folder or table dataset of archive ``cfg.path``."""
    inner = inner_config(ctx.cfg)
    return resolve_builder(inner.kind)(ctx.with_config(inner))


def labelled_images(
    data: Any, *, limit: int | None, n_per_class: int = 2, n_classes: int | None = None
) -> Any:
    """The labelled images of the archive's inner dataset (extracted to the cache)."""
    inner = inner_config(data)
    source = get_data_source(inner.kind)
    return source.read_labelled(inner, limit=limit, n_per_class=n_per_class, n_classes=n_classes)


def captioned_images(data: Any, *, limit: int | None) -> Any:
    """The image-caption pairs of the archive's inner table (extracted to the cache)."""
    inner = inner_config(data)
    return get_data_source(inner.kind).read_captions(inner, limit=limit)
