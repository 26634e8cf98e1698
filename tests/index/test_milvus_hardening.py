"""The Milvus backend across processes (issue 22), with real milvus-lite subprocesses: a new
process searches an index another built; kill -9 during indexing, then re-runs work;
unreachable Milvus and damaged milvus-lite databases are one-line errors (exit 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import clipforge
from tests.conftest import REPO, tiny_model
from tests.index_helpers import write_images

# real milvus-lite processes (tens of seconds each): the slow tier, run by CI
pytestmark = pytest.mark.slow

pytest.importorskip("milvus_lite")

ENV = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
ENV.pop("CLIPFORGE_MILVUS_URI", None)

# indexes with batches of 2 and dies by SIGKILL right after the 3rd insert into Milvus
KILLED_INDEXER = """
import os, sys
from clipforge.index import milvus_store
from clipforge.cli import app
calls = []
original = getattr(milvus_store.MilvusStore.add, "__wrapped__", milvus_store.MilvusStore.add)
def add(self, ids, vectors):
    original(self, ids, vectors)
    calls.append(len(ids))
    if len(calls) == 3:
        os.kill(os.getpid(), 9)
milvus_store.MilvusStore.add = add
app(sys.argv[1:])
"""


def _cli(*args: str, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipforge.cli", *args], env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return str(clipforge.save(tiny_model(), tmp_path_factory.mktemp("m") / "tiny"))


def _search(db: Path, k: int = 50) -> list[dict]:
    found = _cli("search", "a red square", "--db", str(db), "-k", str(k), "--json")
    assert found.returncode == 0, found.stderr[-3000:]
    return json.loads(found.stdout)


def test_a_new_process_searches_an_index_built_by_another(tmp_path, checkpoint):
    """Before: "collection 'clipforge' is in state 'released'" in every new process."""
    photos, db = tmp_path / "photos", tmp_path / "db"
    write_images(photos, 5)
    built = _cli("index", str(photos), "--db", str(db), "--model", checkpoint,
                 "--backend", "milvus")  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    hits = _search(db)
    assert sorted(Path(h["path"]).name for h in hits) == [f"img{i:03d}.png" for i in range(5)]


def test_kill_9_during_indexing_then_reruns_work(tmp_path, checkpoint):
    photos, db = tmp_path / "photos", tmp_path / "db"
    write_images(photos, 12)
    args = ["index", str(photos), "--db", str(db), "--model", checkpoint, "--backend",
            "milvus", "--batch-size", "2", "--workers", "0"]  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", KILLED_INDEXER, *args], env=ENV,
                            capture_output=True, text=True, timeout=180)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    rerun = _cli(*args[:-4])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    again = _cli(*args[:-4], "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["report"]["unchanged"] == 12
    assert len(_search(db)) == 12
    index = clipforge.Index.open(db, tiny_model())
    assert sorted(index.store.ids().tolist()) == sorted(index.meta.all_ids().tolist())
    assert len(index.store) == 12


def _one_line_error(run: subprocess.CompletedProcess, *needles: str) -> None:
    assert run.returncode == 1, (run.returncode, run.stderr[-3000:])
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), run.stderr[-3000:]


@pytest.fixture(scope="module")
def built(tmp_path_factory, checkpoint) -> Path:
    """A milvus index of 4 images built by a CLI process (copied per test)."""
    root = tmp_path_factory.mktemp("built")
    write_images(root / "photos", 4)
    run = _cli("index", str(root / "photos"), "--db", str(root / "db"), "--model", checkpoint,
               "--backend", "milvus")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "db"


def test_unreachable_milvus_is_a_one_line_error(built):
    env = {**ENV, "CLIPFORGE_MILVUS_URI": "http://127.0.0.1:9"}
    run = _cli("search", "a cat", "--db", str(built), env=env, timeout=120)
    _one_line_error(run, "Milvus at http://127.0.0.1:9", "cannot open the collection")


def test_damaged_milvus_lite_database_is_a_one_line_error(built, tmp_path):
    import shutil

    db = shutil.copytree(built, tmp_path / "db")
    collection = db / "vectors.milvus.db" / "collections" / "clipforge"
    for manifest in collection.glob("manifest.json*"):
        manifest.write_text("{garbage")
    _one_line_error(_cli("search", "a cat", "--db", str(db)), "vectors.milvus.db",
                    "move vectors.milvus.db away to rebuild it")  # fmt: skip
    shutil.rmtree(db / "vectors.milvus.db")
    (db / "vectors.milvus.db").write_bytes(b"not a database")
    _one_line_error(_cli("search", "a cat", "--db", str(db)), "vectors.milvus.db")


def test_damaged_version_manifest_rebuilds_from_sqlite(built, tmp_path):
    import shutil

    from clipforge.index.milvus_store import VERSION_FILE

    db = shutil.copytree(built, tmp_path / "db")
    (db / VERSION_FILE).write_text("{not json")
    assert len(_search(db)) == 4
    assert json.loads((db / VERSION_FILE).read_text())["version"] >= 0
