"""Issue 22, the index: writer lock, content reconcile, missing roots, special files, k caps,
typed errors for damaged files, disk full and mistyped --db."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

import clipforge
from clipforge.cli import app
from clipforge.errors import UsageError
from clipforge.index import (
    IndexCorruptError,
    IndexLockedError,
    IndexNotFoundError,
    IndexRepairedWarning,
    IndexWriteError,
    RootNotFoundError,
)
from clipforge.index.locking import writer_lock
from tests.conftest import REPO, tiny_model
from tests.index_helpers import write_image, write_images

runner = CliRunner()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def built(tmp_path, model):
    photos = tmp_path / "photos"
    write_images(photos, 6)
    db = tmp_path / "db"
    with clipforge.Index.open(db, model) as index:
        index.sync([photos])
    return photos, db


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def test_second_writer_is_refused_with_the_holders_pid(built, model):
    photos, db = built
    locked = pytest.raises(IndexLockedError, match=f"being written by PID {os.getpid()}")
    with writer_lock(db), clipforge.Index.open(db, model) as index, locked:
        index.sync([photos])
    assert IndexLockedError.http_status == 409


def test_writer_waits_with_a_timeout_then_proceeds(built, model):
    photos, db = built
    write_images(photos, 2, start=50)
    held = threading.Event()

    def hold() -> None:  # flock conflicts between two open()s, even in one process
        with writer_lock(db):
            held.set()
            time.sleep(1.0)

    holder = threading.Thread(target=hold)
    with clipforge.Index.open(db, model, lock_timeout=30) as index:
        holder.start()
        assert held.wait(10)
        start = time.monotonic()
        report = index.sync([photos])
        assert time.monotonic() - start >= 0.5
        holder.join(10)
        assert report.added == 2 and len(index) == 8


@pytest.mark.slow  # two real indexer processes
def test_two_concurrent_cli_indexers_lose_nothing(tmp_path):
    """Two real `clipforge index` processes on one db: each image searchable at the end,
    or the second refuses with a clear one-line error."""
    ckpt = clipforge.save(tiny_model(), tmp_path / "tiny")
    a, b = write_images(tmp_path / "a", 40), write_images(tmp_path / "b", 40, start=100)
    db = tmp_path / "db"
    cmd = [sys.executable, "-m", "clipforge.cli", "index", "--db", str(db), "--model", str(ckpt)]
    procs = [
        subprocess.Popen([*cmd, str(d)], env=_env(), stderr=subprocess.PIPE, text=True)
        for d in (tmp_path / "a", tmp_path / "b")
    ]
    results = [(p.wait(300), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert rc == 0 or "is being written by PID" in err, err
    with clipforge.Index.open(db, create=False) as index:
        rows = {r[0] for r in index.meta.db.execute("SELECT path FROM images")}
        assert sorted(index.store.ids().tolist()) == sorted(index.meta.all_ids().tolist())
    for rc, (files) in zip([r[0] for r in results], (a, b), strict=True):
        if rc == 0:
            assert {str(f) for f in files} <= rows


def test_damaged_vector_file_is_rebuilt_and_said_so(built, model):
    photos, db = built
    (db / "vectors.faiss").write_bytes(b"garbage" * 100)
    with pytest.warns(IndexRepairedWarning, match="damaged"):
        index = clipforge.Index.open(db, model)
    with index:
        assert len(index.search_vectors(index.meta.vectors(None, 0)[1][:1], k=3)[0]) == 3
        assert sorted(index.store.ids().tolist()) == sorted(index.meta.all_ids().tolist())


def test_vector_file_with_other_ids_is_reconciled_by_content(built, model):
    photos, db = built
    with clipforge.Index.open(db, model) as index:
        index.store.remove(index.meta.all_ids()[:2])
        index.store.save(index.meta.version)  # same version, fewer ids: used to be trusted
    with pytest.warns(IndexRepairedWarning, match="2 missing"):
        index = clipforge.Index.open(db, model)
    with index:
        assert len(index.store) == 6


def test_damaged_metadata_is_a_typed_error(built):
    _, db = built
    (db / "metadata.sqlite").write_bytes(b"not a database" * 1000)
    for extra in ("metadata.sqlite-wal", "metadata.sqlite-shm"):
        (db / extra).unlink(missing_ok=True)
    with pytest.raises(IndexCorruptError, match="metadata.sqlite is damaged"):
        clipforge.Index.open(db)


def test_disk_full_is_one_typed_line_and_leaves_the_index_consistent(built, model, monkeypatch):
    photos, db = built
    write_images(photos, 2, start=60)
    with clipforge.Index.open(db, model) as index:

        def full(version):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(index.store, "save", full)
        with pytest.raises(IndexWriteError, match="No space left"):
            index.sync([photos])
    monkeypatch.undo()
    with clipforge.Index.open(db, model) as index:
        assert sorted(index.store.ids().tolist()) == sorted(index.meta.all_ids().tolist())


def test_missing_root_removes_nothing_unless_pruned(built, model, tmp_path):
    photos, db = built
    gone = tmp_path / "moved"
    photos.rename(gone)
    with clipforge.Index.open(db, model) as index:
        with pytest.raises(RootNotFoundError, match="not found — nothing removed"):
            index.sync([photos])
        assert len(index) == 6
        assert index.sync([photos], prune_missing=True).removed == 6
        assert len(index) == 0


def test_missing_root_cli_exit_1(tmp_path):
    ckpt = clipforge.save(tiny_model(), tmp_path / "tiny")
    photos, db = tmp_path / "photos", tmp_path / "db"
    write_images(photos, 3)
    assert (
        runner.invoke(app, ["index", str(photos), "--db", str(db), "--model", str(ckpt)]).exit_code
        == 0
    )
    photos.rename(tmp_path / "elsewhere")
    result = runner.invoke(app, ["index", str(photos), "--db", str(db)])
    assert result.exit_code == 1 and "--prune-missing" in result.output
    with clipforge.Index.open(db, create=False) as index:
        assert len(index) == 3


def test_fifo_and_device_link_are_skipped_without_opening(tmp_path, model):
    photos = tmp_path / "photos"
    write_images(photos, 3)
    os.mkfifo(photos / "trap.png")
    (photos / "zero.jpg").symlink_to("/dev/zero")
    db = tmp_path / "db"

    def index_folder() -> None:  # opening the FIFO would block this thread, not the test
        with clipforge.Index.open(db, model) as index:
            index.sync([photos])

    worker = threading.Thread(target=index_folder, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "indexing blocked on the FIFO or /dev/zero"
    with clipforge.Index.open(db, create=False) as index:
        reasons = dict(index.errors())
        assert len(index) == 3
    assert "FIFO" in reasons[str(photos / "trap.png")]
    assert "character device" in reasons[str(photos / "zero.jpg")]


def test_k_is_refused_when_not_positive_and_capped(built, model):
    _, db = built
    with clipforge.Index.open(db, model) as index:
        query = index.meta.vectors(None, 0)[1][:1]
        for bad in (0, -3):
            with pytest.raises(UsageError, match="k must be"):
                index.search_vectors(query, k=bad)
        start = time.perf_counter()
        hits = index.search_vectors(query, k=1_000_000_000)[0]
        assert len(hits) == 6 and time.perf_counter() - start < 5
        assert len(index.search("a photo", k=1_000_000_000)) == 6


def test_mistyped_db_is_refused_and_not_created(tmp_path):
    db = tmp_path / "typo"
    result = runner.invoke(app, ["search", "cat", "--db", str(db)])
    assert result.exit_code == 1
    assert f"no index at {db}" in result.output
    assert not db.exists()
    with pytest.raises(IndexNotFoundError):
        clipforge.Index.open(db, create=False)
    assert not db.exists()


def test_rehash_reembeds_a_file_replaced_with_same_size_and_mtime(tmp_path, model):
    photos, db = tmp_path / "photos", tmp_path / "db"
    target = write_image(photos / "a.bmp", seed=1)  # BMP: same pixels size, same bytes size
    write_image(photos / "b.bmp", seed=2)
    replacement = write_image(tmp_path / "other.bmp", seed=3).read_bytes()
    st = target.stat()
    with clipforge.Index.open(db, model) as index:
        index.sync([photos])
        query = "SELECT id, sha256 FROM images WHERE path = ?"
        old = index.meta.db.execute(query, (str(target),)).fetchone()
        target.write_bytes(replacement)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert target.stat().st_size == st.st_size
        assert index.sync([photos]).replaced == 0  # the stat shortcut cannot notice
        report = index.sync([photos], rehash=True)
        new = index.meta.db.execute(query, (str(target),)).fetchone()
    assert report.replaced == 1 and new[1] != old[1] and new[0] != old[0]


def test_names_that_are_not_utf8_are_indexed_losslessly_and_never_stop_a_batch(tmp_path):
    """A file name with bytes that are not UTF-8 (b'caf\\xe9.png') is indexed with the others,
    kept exactly (a re-run finds it unchanged), searchable, and printed as valid JSON."""
    ckpt = clipforge.save(tiny_model(), tmp_path / "tiny")
    photos, db = tmp_path / "photos", tmp_path / "db"
    write_images(photos, 3)
    odd = os.path.join(os.fsencode(photos), b"caf\xe9.png")
    write_image(tmp_path / "odd.png", seed=7).rename(os.fsdecode(odd))
    write_images(photos, 2, start=10)  # names sorted after the odd one: the batch goes on
    first = runner.invoke(app, ["index", str(photos), "--db", str(db), "--model", str(ckpt)])
    assert first.exit_code == 0, first.output
    with clipforge.Index.open(db, create=False) as index:
        assert len(index) == 6
        paths = {os.fsencode(p) for p, state in index.meta.states().items() if state.kind == "image"}
    assert odd in paths  # the exact bytes
    again = runner.invoke(app, ["index", str(photos), "--db", str(db), "--json"])
    assert again.exit_code == 0, again.output
    found = runner.invoke(app, ["search", "anything", "--db", str(db), "-k", "6", "--json"])
    assert found.exit_code == 0, found.output
    import json

    hits = json.loads(found.stdout)
    assert len(hits["results"] if isinstance(hits, dict) else hits) == 6
