"""``clipforge.Index``: an incremental, crash-safe image search index in one directory.

``DIR/metadata.sqlite`` is the source of truth (metadata and every vector); the vector
backend (FAISS by default, ``DIR/vectors.faiss``) is saved atomically after each run and
reconciled from the stored vectors whenever it is found stale (after a crash).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..embedding import stream_image_embeddings
from ..models.protocols import ClipModel
from ..runtime import Precision
from . import frames, ocr as ocr_text, reconcile
from .fusion import OcrMode, hybrid_search
from .locking import IndexLockedError, RootNotFoundError, write_errors, writer_lock
from .metadata import ImageRow, MetadataStore, file_identity
from .opening import _check_model, check_precision_of, file_kind, require_index
from .photo_store import backfill, migrate_photos, retry_plugin_errors
from .photos import open_photo
from .query import Filters, SearchHit
from .querying import query_vector, search_vectors
from .report import IndexReport, Pending as _Pending
from .scan import expand, file_sha256, image_size
from .store import StoreOptions, VectorStore
from .video import VideoSampling, index_videos, is_video

TUNE_QUERIES = 200
MAX_K = 10_000


class Index:
    """A directory holding a searchable index of image embeddings.

    Open with :meth:`open`; add files with :meth:`add` / :meth:`sync`, query with
    :meth:`search`. Text and image queries need the ``model`` that built the index.
    """

    def __init__(self, path: Path, meta: MetadataStore, store: VectorStore, model) -> None:
        self.path = path
        self.meta = meta
        self.store = store
        self.model = model
        self.precision: Precision = "fp32"
        self.lock = threading.RLock()
        self.lock_timeout: float | None = 0.0
        self.max_k = MAX_K
        self._writers = 0
        self._rehash = False
        self.video_sampling = VideoSampling()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        model: ClipModel | None = None,
        *,
        backend: str = "faiss",
        options: StoreOptions | None = None,
        model_spec: dict | None = None,
        create: bool = True,
        lock_timeout: float | None = 0.0,
        precision: str | None = None,
        allow_precision_mismatch: bool = False,
    ) -> Index:
        """Open (or create) the index directory ``path``.

        ``model``: the CLIP model used for embedding; the first one is recorded and any
        other is refused (:class:`ModelMismatchError`). ``model_spec``: how to load it again
        (recorded for the command line). ``options``: index kind / memory / recall target.
        ``create=False``: refuse a directory without an index (:class:`IndexNotFoundError`).
        ``lock_timeout``: seconds a writer waits for another one (``None``: forever).
        ``precision``: what the model runs at (``"int8"``: its int8 copy, see
        :mod:`clipforge.quantization`); a new index records it (default fp32), an existing
        one refuses another (:class:`PrecisionMismatchError`) unless
        ``allow_precision_mismatch``; ``None`` keeps the recorded one.
        """
        path = Path(path)
        if not create:
            require_index(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = MetadataStore(path / "metadata.sqlite")
        migrate_photos(meta.db)
        chosen = check_precision_of(meta, model, precision, allow_precision_mismatch)
        dim = _check_model(meta, model, backend, model_spec)
        saved = json.loads(meta.get_meta("store_options") or "{}")
        if options is None:
            options = StoreOptions(**saved)
        elif options.__dict__ != saved:
            meta.set_meta("store_options", json.dumps(options.__dict__))
        store = reconcile.open_store(meta.get_meta("backend") or backend, path, dim, options)
        store = frames.FrameAwareStore(store, meta.db)
        index = cls(path, meta, store, model)
        index.precision = chosen
        index.lock_timeout = lock_timeout
        index._reconcile()
        return index

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer lock (re-entrant in this object) and bring the backend in line
        with SQLite first: another process may have written since this one opened."""
        with self.lock:
            if self._writers:
                self._writers += 1
                try:
                    yield
                finally:
                    self._writers -= 1
                return
            with writer_lock(self.path, self.lock_timeout), write_errors(self.path):
                self._writers = 1
                try:
                    reconcile.repair(self, announce=False)
                    yield
                finally:
                    self._writers = 0

    def close(self) -> None:
        self.meta.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.meta.count()

    @property
    def model_spec(self) -> dict | None:
        """How the command line loads the model that built this index."""
        spec = self.meta.get_meta("model_spec")
        return None if spec is None else json.loads(spec)

    @property
    def roots(self) -> list[str]:
        """The folders (and files) given to :meth:`sync` so far."""
        return json.loads(self.meta.get_meta("roots") or "[]")

    def info(self) -> dict:
        """Counts, model id and backend description."""
        return {
            "path": str(self.path),
            "images": len(self),
            "errors": len(self.meta.errors()),
            "duplicates": len(self.meta.duplicates()),
            "model_id": self.meta.get_meta("model_id"),
            "model": self.model_spec,
            "dim": int(self.meta.get_meta("dim") or 0),
            "store": self.store.describe(),
            **frames.video_totals(self.meta.db),
            "ocr": ocr_text.describe(self.meta.db),
        }

    # -- indexing -------------------------------------------------------------------
    def add(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        progress: bool | None = None,
        rehash: bool = False,
        ocr: bool | ocr_text.OcrEngine | None = None,
    ) -> IndexReport:
        """Index image files (directories are expanded): new or changed files are embedded,
        renamed ones re-pointed, exact duplicates (by SHA-256) and unchanged files skipped,
        unreadable ones recorded in :meth:`errors`. Committed batch by batch.
        ``rehash``: hash every file even when size and mtime are unchanged (re-embedding
        those whose bytes changed). ``ocr``: also read text in images (:mod:`.ocr`)."""
        self._require_model()
        start = time.perf_counter()
        report = IndexReport()
        with self.writing():
            engine = ocr_text.choose_engine(self.meta, ocr)  # before embedding: fail fast
            self._rehash = rehash
            retry_plugin_errors(self.meta)  # a package installed since: try those files again
            pending, later = self._plan(expand(paths), report)
            images = [p for p in pending if not is_video(p.path)]
            self._embed(images, report, batch_size, num_workers, progress)
            index_videos(self, [p for p in pending if is_video(p.path)], report, batch_size)
            self._record_duplicates(later, report)
            backfill(self.meta)  # capture dates, places, cameras (and older databases')
            self._persist()
            if engine is not None:
                ocr_text.recognise_pending(self, engine, report)
        report.seconds = time.perf_counter() - start
        return report

    def sync(
        self, roots: Sequence[str | os.PathLike], *, prune_missing: bool = False, **kwargs
    ) -> IndexReport:
        """:meth:`add` every image under ``roots``, then drop what is no longer there.

        A missing root (unmounted disk, typo) is refused with :class:`RootNotFoundError` and
        nothing is removed, unless ``prune_missing`` (then its rows are removed)."""
        missing = [str(r) for r in roots if not os.path.lexists(r)]
        if missing and not prune_missing:
            raise RootNotFoundError(
                f"{missing[0]}: not found — nothing removed; use --prune-missing to remove "
                "its rows"
            )
        with self.writing():
            files = expand(r for r in roots if str(r) not in missing)
            with self.meta.transaction():
                known = set(self.roots) | {str(Path(r).absolute()) for r in roots}
                self.meta.set_meta("roots", json.dumps(sorted(known)))
            report = self.add(files, **kwargs)
            prefixes = tuple(os.path.join(str(Path(r).absolute()), "") for r in roots)
            exact = {str(Path(r).absolute()) for r in missing}
            present = set(files)
            gone = [
                p
                for p in self.meta.states()
                if (p.startswith(prefixes) or p in exact) and p not in present
            ]
            report.removed = self.remove(gone)
        return report

    def remove(self, paths: Iterable[str | os.PathLike]) -> int:
        """Forget these files; returns how many indexed images were removed."""
        paths = [str(Path(p).absolute()) for p in paths]
        removed: list[int] = []
        with self.writing(), self.meta.transaction():
            for path in paths:
                row = self.meta.db.execute("SELECT id FROM images WHERE path = ?", (path,))
                old = row.fetchone()
                promoted = old is not None and self._promote_duplicate(old[0])
                gone = None if promoted else self.meta.forget_path(path)
                if gone is not None:
                    removed.append(gone)
            if removed:
                self.meta.bump_version()
        with self.writing():
            self.store.remove(np.asarray(removed, np.int64))
            self._persist()
        return len(removed)

    def _promote_duplicate(self, id_: int) -> bool:
        """The original of a duplicate group is gone: a surviving copy takes its row."""
        for path, size, mtime_ns in self.meta.duplicates_of(id_):
            if os.path.exists(path):
                self.meta.move_image(id_, path, size, mtime_ns)
                return True
        return False

    def errors(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file that could not be indexed."""
        return self.meta.errors()

    def _plan(self, files: list[str], report: IndexReport) -> tuple[list[_Pending], list[_Pending]]:
        """Classify files; apply renames, touches, duplicates and errors; list what to embed."""
        known = self.meta.states()
        pending: list[_Pending] = []
        later: list[_Pending] = []
        first_by_hash: set[str] = set()
        removed: list[int] = []
        with self.meta.transaction():
            for path in files:
                item = self._classify(path, known.get(path), report, removed)
                if item is None:
                    continue
                if item.sha256 in first_by_hash:
                    later.append(item)
                else:
                    first_by_hash.add(item.sha256)
                    pending.append(item)
            if removed:
                self.meta.bump_version()
        self.store.remove(np.asarray(removed, np.int64))
        return pending, later

    def _classify(self, path: str, state, report: IndexReport, removed: list[int]):
        try:
            st = os.stat(path)
        except OSError as exc:  # dangling link, permissions, ...: keyed on the link itself
            size, mtime_ns = _lstat(path)
            if state is not None and (state.kind, state.size, state.mtime_ns) == (
                "error",
                size,
                mtime_ns,
            ):
                report.unchanged += 1
                return None
            reason = "no such file" if isinstance(exc, FileNotFoundError) else f"unreadable: {exc}"
            self._fail(path, size, mtime_ns, reason, report, removed)
            return None
        if not stat.S_ISREG(st.st_mode):  # FIFO, device, socket: never opened
            self._fail(path, 0, 0, f"not a regular file ({file_kind(st.st_mode)})", report, removed)
            return None
        same_stat = state is not None and (state.size, state.mtime_ns) == (
            st.st_size,
            st.st_mtime_ns,
        )
        if same_stat and state is not None and not (self._rehash and state.kind == "image"):
            report.unchanged += 1
            return None
        try:
            sha = file_sha256(path)
        except OSError as exc:
            self._fail(path, st.st_size, st.st_mtime_ns, f"unreadable: {exc}", report, removed)
            return None
        old_id = state.id if state is not None and state.kind == "image" else None
        if old_id is not None and state is not None and state.sha256 == sha:  # touched only
            self.meta.move_image(old_id, path, st.st_size, st.st_mtime_ns, file_identity(st))
            report.unchanged += 1
            return None
        original = self.meta.by_hash(sha)
        if original is None or original.path == path:
            return _Pending(path, st.st_size, st.st_mtime_ns, sha, old_id, file_identity(st))
        if old_id is not None:
            removed.append(old_id)
            self.meta.forget_path(path)
        if not os.path.exists(original.path):  # renamed (or moved)
            self.meta.move_image(original.id, path, st.st_size, st.st_mtime_ns, file_identity(st))
            report.renamed += 1
        else:
            self.meta.add_duplicate(path, st.st_size, st.st_mtime_ns, sha, original.id)
            report.duplicates += 1
        return None

    def _fail(self, path, size, mtime_ns, reason, report, removed) -> None:
        gone = self.meta.add_error(path, size, mtime_ns, reason)
        if gone is not None:
            removed.append(gone)
        report.failed.append((path, reason))

    def _embed(self, pending, report, batch_size, num_workers, progress) -> None:

        if not pending:
            return

        def commit(indices: list[int], features: torch.Tensor) -> None:
            vectors = features.cpu().numpy()
            new_ids, old_ids = [], []
            with self.meta.transaction():
                for i, vector in zip(indices, vectors, strict=True):
                    item = pending[i]
                    width, height = image_size(item.path)
                    row = ImageRow(
                        0, item.path, item.size, item.mtime_ns, item.sha256, width, height,
                        *(item.identity or (None, None)),
                    )  # fmt: skip
                    new_ids.append(self.meta.insert_image(row, vector))
                    if item.old_id is not None:
                        old_ids.append(item.old_id)
                self.meta.bump_version()
            self.store.remove(np.asarray(old_ids, np.int64))
            self.store.add(np.asarray(new_ids, np.int64), vectors)
            report.replaced += len(old_ids)
            report.added += len(new_ids) - len(old_ids)

        failures = stream_image_embeddings(
            self.model,
            [p.path for p in pending],
            commit,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            loader=open_photo,  # HEIC/AVIF/RAW previews, EXIF orientation applied
            precision=self.precision,
        )
        removed: list[int] = []
        with self.meta.transaction():
            for i, reason in failures:
                item = pending[i]
                self._fail(item.path, item.size, item.mtime_ns, reason, report, removed)
            if removed:
                self.meta.bump_version()
        self.store.remove(np.asarray(removed, np.int64))

    def _record_duplicates(self, later: list[_Pending], report: IndexReport) -> None:
        removed: list[int] = []
        with self.meta.transaction():
            for item in later:
                original = self.meta.by_hash(item.sha256)
                if original is None:
                    reason = "same bytes as a file that could not be read"
                    self._fail(item.path, item.size, item.mtime_ns, reason, report, removed)
                    continue
                if item.old_id is not None:
                    removed.append(item.old_id)
                self.meta.add_duplicate(
                    item.path, item.size, item.mtime_ns, item.sha256, original.id
                )
                report.duplicates += 1
            if removed:
                self.meta.bump_version()
        self.store.remove(np.asarray(removed, np.int64))

    # -- backend consistency ----------------------------------------------------------
    def _reconcile(self) -> None:
        """Compare the backend with the stored vectors by content; repair it (and save it
        when no other process is writing) if they disagree: crash, damage, lost race."""
        with self.lock:
            if not reconcile.repair(self):
                return
            try:
                with self.writing():
                    self._persist()
            except IndexLockedError:  # another writer holds the lock: it saves its own state
                pass

    def rebuild(self, *, _locked: bool = False) -> dict:
        """Rebuild the backend from the stored vectors (choosing the index kind) and tune it."""
        if not _locked:
            with self.writing():
                return self.rebuild(_locked=True)
        with self.lock:
            ids, vectors = self.meta.vectors(None, self._dim)
            self.store.rebuild(ids, vectors)
            tuned = self._tune(ids, vectors)
            self.store.save(self.meta.version)
        return tuned

    def _persist(self) -> None:
        if self.store.wants_rebuild():
            self.rebuild()
        elif self.store.version != self.meta.version:
            self.store.save(self.meta.version)

    def _tune(self, ids: np.ndarray, vectors: np.ndarray) -> dict:
        if len(ids) < 2:
            return {}
        rng = np.random.default_rng(0)
        rows = rng.choice(len(ids), min(TUNE_QUERIES, len(ids)), replace=False)
        queries = vectors[rows]
        k = min(10, len(ids) - 1)
        scores = queries @ vectors.T
        scores[np.arange(len(rows)), rows] = -np.inf  # a query is not its own neighbour
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        return self.store.tune(queries, ids[top], k, ids[rows])

    @property
    def _dim(self) -> int:
        return int(self.meta.get_meta("dim") or 0)

    def _require_model(self) -> ClipModel:
        if self.model is None:
            raise ValueError("this operation embeds images or texts: open the index with a model")
        return self.model

    # -- search ---------------------------------------------------------------------
    def search(
        self,
        text: str | Sequence[str] | None = None,
        *,
        image=None,
        negative: str | Sequence[str] | None = None,
        text_weight: float = 1.0,
        image_weight: float = 1.0,
        negative_weight: float = 0.5,
        k: int = 20,
        filters: Filters | None = None,
        ocr: OcrMode = "auto",
    ) -> list[SearchHit]:
        """Top-``k`` images for a text and/or image query, minus ``negative`` prompts.

        The query vector is ``text_weight * t + image_weight * i - negative_weight * n``
        (each part L2-normalised; several texts are averaged), normalised again. ``ocr``:
        fuse with recognised text (``"auto"``), text only, or ``"off"`` (:mod:`.fusion`).
        """

        vector = query_vector(
            self._require_model(), text, image, negative, text_weight, image_weight,
            negative_weight, precision=self.precision,
        )  # fmt: skip
        return hybrid_search(self, vector, text, k, filters, ocr)

    def search_vectors(
        self, queries: np.ndarray, k: int = 20, filters: Filters | None = None
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits for each row of ``queries`` (normalised ``(nq, dim)`` floats)."""

        with self.lock:
            return search_vectors(self, np.atleast_2d(queries).astype(np.float32), k, filters)


def _lstat(path: str) -> tuple[int, int]:
    try:
        st = os.lstat(path)
    except OSError:
        return 0, 0
    return st.st_size, st.st_mtime_ns
