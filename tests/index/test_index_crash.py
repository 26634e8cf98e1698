"""kill -9 in the middle of indexing, then re-run: every good image is indexed exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import clipforge
from tests.conftest import REPO, tiny_model
from tests.index_helpers import write_images

WORKER = """
import sys
import clipforge
from tests.conftest import tiny_model
index = clipforge.Index.open(sys.argv[1], tiny_model())
index.sync([sys.argv[2]], batch_size=2, progress=False)
"""


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db / "metadata.sqlite", timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _run_and_kill(db: Path, photos: Path, after_rows: int) -> int:
    """Start an indexing process, SIGKILL it once ``after_rows`` rows are committed."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(db), str(photos)], env=env)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _count(db) >= after_rows:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow  # subprocesses killed mid-index: end to end
def test_kill_9_mid_index_then_rerun_indexes_every_good_image_once(tmp_path):
    photos = tmp_path / "photos"
    good = write_images(photos, 300)
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    (photos / "twin.png").write_bytes(good[7].read_bytes())
    db = tmp_path / "db"
    assert _run_and_kill(db, photos, after_rows=20) == -signal.SIGKILL
    first = _count(db)
    assert 20 <= first < 300
    assert _run_and_kill(db, photos, after_rows=first + 60) == -signal.SIGKILL
    second = _count(db)
    assert first < second < 300

    index = clipforge.Index.open(db, tiny_model())  # reconciles the stale FAISS file
    report = index.sync([photos], batch_size=16)
    paths = [p for (p,) in index.meta.db.execute("SELECT path FROM images")]
    assert sorted(paths) == sorted(str(p) for p in good)
    backend_ids = index.store.ids()
    assert len(backend_ids) == len(set(backend_ids.tolist())) == 300
    assert sorted(backend_ids.tolist()) == sorted(index.meta.all_ids().tolist())
    assert [Path(p).name for p, _ in index.errors()] == ["broken.png"]
    assert index.meta.duplicates()[0][0] == str(photos / "twin.png")
    assert (report.added, report.replaced) == (300 - second, 0)  # committed rows are kept
