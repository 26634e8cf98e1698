"""Forked data-loading workers never free the garbage they inherit from the parent.

Freed in a worker, a parent's garbage runs its destructors there, in a process without the
parent's threads: a CI run lost a training test when a worker collected a Ray GCS client left
in a cycle by Ray tests run earlier in the same process ("DataLoader worker ... killed by
signal: Aborted"). Both loaders clipforge builds, training's and ``embed_images``', start
their workers with :func:`clipforge.runtime.freeze_inherited_heap`."""

from __future__ import annotations

import functools
import gc
import os
from pathlib import Path

from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clipforge.data.data_config import DataConfig
from clipforge.data.loader import _loader_kwargs
from clipforge.embedding import _init_worker


class _Witness:
    """Garbage once made (it refers to itself); writes a file if freed in another process."""

    def __init__(self, marker: Path) -> None:
        self.marker, self.parent, self.me = marker, os.getpid(), self

    def __del__(self) -> None:
        if os.getpid() != self.parent:
            self.marker.write_text(str(os.getpid()))


class _Collecting(Dataset):
    """Each item runs a full collection in the worker first."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        gc.collect()
        return i


def _worker_frees_inherited_garbage(tmp_path: Path, worker_init_fn) -> bool:
    marker = tmp_path / "freed-in-a-worker"
    gc.collect()
    _Witness(marker)  # garbage from here on: only a collection frees it
    loader = DataLoader(_Collecting(), batch_size=1, num_workers=1,
                        multiprocessing_context="fork", worker_init_fn=worker_init_fn)  # fmt: skip
    try:
        assert [batch.tolist() for batch in loader] == [[0], [1]]
    finally:
        gc.collect()  # the parent frees it (no file: it is the parent)
    return marker.exists()


def test_a_worker_without_the_freeze_would_free_it(tmp_path):
    """The control: the witness does report a worker's collection."""
    assert _worker_frees_inherited_garbage(tmp_path, None)


def test_training_loader_workers_never_free_what_they_inherit(tmp_path):
    init = _loader_kwargs(DataConfig(num_workers=1), seed=0, start_step=0)["worker_init_fn"]
    assert not _worker_frees_inherited_garbage(tmp_path, init)


def test_embedding_loader_workers_never_free_what_they_inherit(tmp_path):
    init = functools.partial(_init_worker, Image.MAX_IMAGE_PIXELS)
    assert not _worker_frees_inherited_garbage(tmp_path, init)
