"""``clipforge index --watch`` as a real process: Ctrl-C stops it cleanly, and kill -9 in
the middle of an update still leaves every good file indexed exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

import clipforge
from clipforge.index import IndexRepairedWarning
from tests.conftest import REPO, tiny_model
from tests.index_helpers import write_image, write_images


class WatchProcess:
    """``clipforge index DIR --db DB --watch`` with its output lines collected."""

    def __init__(self, photos: Path, db: Path, ckpt: Path) -> None:
        src = Path(clipforge.__file__).parents[1]
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{REPO}"}
        args = [sys.executable, "-m", "clipforge.cli", "index", str(photos), "--db", str(db),
                "--model", str(ckpt), "--watch", "--debounce", "0.1", "--batch-size", "4",
                "--workers", "0"]  # fmt: skip
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=_collect, args=(stream, lines), daemon=True).start()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.out + self.err):
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.err}"
            assert time.monotonic() < deadline, f"no {text!r} in {self.out} {self.err}"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def _collect(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db / "metadata.sqlite", timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return clipforge.save(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.mark.slow  # CLI processes (torch import each)
def test_ctrl_c_stops_the_watcher_cleanly(tmp_path, ckpt):
    photos, db = tmp_path / "photos", tmp_path / "db"
    write_images(photos, 3)
    watcher = WatchProcess(photos, db, ckpt)
    try:
        watcher.wait_for("3 indexed")
        write_image(photos / "new.png", seed=9)
        watcher.wait_for("4 indexed", timeout=10)
        watcher.proc.send_signal(signal.SIGINT)
        assert watcher.proc.wait(timeout=20) == 0
    finally:
        watcher.kill()
    time.sleep(0.1)  # the reader threads drain the pipes
    assert any("stopped watching" in line for line in watcher.err), watcher.err
    with warnings.catch_warnings():
        warnings.simplefilter("error", IndexRepairedWarning)  # saved in line with SQLite
        index = clipforge.Index.open(db, clipforge.load(ckpt))
    assert len(index) == 4


@pytest.mark.slow  # watcher processes killed mid-update: end to end
def test_kill_9_during_a_watch_leaves_every_good_file_indexed_once(tmp_path, ckpt):
    photos, db = tmp_path / "photos", tmp_path / "db"
    photos.mkdir()
    watcher = WatchProcess(photos, db, ckpt)
    try:
        watcher.wait_for("0 indexed")
        good = write_images(photos, 200)
        (photos / "broken.png").write_bytes(b"\x89PNG not really")
        (photos / "twin.png").write_bytes(good[7].read_bytes())
        deadline = time.monotonic() + 120
        while _count(db) < 24 and time.monotonic() < deadline:
            time.sleep(0.005)
        watcher.proc.send_signal(signal.SIGKILL)
        assert watcher.proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        watcher.kill()
    first = _count(db)
    assert 24 <= first < 200  # killed in the middle of the update

    more = write_images(photos, 20, start=500)  # arrives while no watcher runs
    good[3].unlink()
    restarted = WatchProcess(photos, db, ckpt)
    try:
        restarted.wait_for(f"{200 - 1 + 20} indexed")  # the catch-up sync on start
        restarted.proc.send_signal(signal.SIGINT)
        assert restarted.proc.wait(timeout=20) == 0
    finally:
        restarted.kill()

    index = clipforge.Index.open(db, clipforge.load(ckpt))
    expected = sorted(str(p) for p in good + more if p != good[3])
    paths = sorted(p for (p,) in index.meta.db.execute("SELECT path FROM images"))
    assert paths == expected
    backend = index.store.ids().tolist()
    assert len(backend) == len(set(backend)) == len(expected)
    assert sorted(backend) == sorted(index.meta.all_ids().tolist())
    assert [Path(p).name for p, _ in index.errors()] == ["broken.png"]
    assert index.meta.duplicates()[0][0] == str(photos / "twin.png")
