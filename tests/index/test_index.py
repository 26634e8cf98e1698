"""The search index: incremental re-indexing, bad files, exact search, filters, models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipforge
from clipforge.index import Filters, ModelMismatchError, StoreOptions
from tests.conftest import perturb_, tiny_model
from tests.index_helpers import brute_force, write_image, write_images


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module", params=["faiss", "milvus"])
def backend(request) -> str:
    """The backend-neutral tests run on every search backend (milvus: milvus-lite)."""
    return request.param


def _rows(index) -> dict[str, int]:
    return dict(index.meta.db.execute("SELECT path, id FROM images").fetchall())


def _consistent(index) -> None:
    """The backend holds exactly the rows of the metadata store."""
    assert sorted(index.store.ids().tolist()) == sorted(index.meta.all_ids().tolist())


def test_incremental_reindex_touches_exactly_the_right_rows(tmp_path, model, backend):
    photos = tmp_path / "photos"
    files = write_images(photos, 6)
    index = clipforge.Index.open(tmp_path / "db", model, backend=backend)
    first = index.sync([photos])
    assert (first.added, first.failed) == (6, [])
    before = _rows(index)

    write_image(photos / "new.png", seed=100)  # add
    write_image(files[1], seed=101)  # modify
    files[2].unlink()  # delete
    files[3].rename(photos / "renamed.png")  # rename
    shutil.copy(files[4], photos / "copy.png")  # exact duplicate
    os.utime(files[5], ns=(1, 2_000_000_000))  # touched: same bytes, new mtime
    report = index.sync([photos])

    assert (report.added, report.replaced, report.removed) == (1, 1, 1)
    assert (report.renamed, report.duplicates, report.unchanged) == (1, 1, 3)
    after = _rows(index)
    p = {f.name: str(f) for f in files}
    assert after[p["img000.png"]] == before[p["img000.png"]]
    assert after[p["img005.png"]] == before[p["img005.png"]]
    assert after[str(photos / "renamed.png")] == before[p["img003.png"]]
    assert after[p["img001.png"]] not in before.values()  # re-embedded under a new id
    assert p["img002.png"] not in after and str(photos / "copy.png") not in after
    assert len(after) == 6
    assert index.meta.duplicates() == [(str(photos / "copy.png"), before[p["img004.png"]])]
    _consistent(index)
    fresh = clipforge.embed_images(model, [files[1]]).embeddings[0]
    ids, vectors = index.meta.vectors([after[p["img001.png"]]], 32)
    np.testing.assert_allclose(vectors[0], fresh, atol=1e-6)

    again = index.sync([photos])  # nothing changed: nothing embedded
    assert (again.added, again.replaced, again.removed, again.unchanged) == (0, 0, 0, 7)
    index.close()
    reopened = clipforge.Index.open(tmp_path / "db", model, backend=backend)
    assert _rows(reopened) == after
    _consistent(reopened)


def test_deleting_an_original_promotes_its_duplicate(tmp_path, model, backend):
    photos = tmp_path / "photos"
    original = write_image(photos / "a.png", seed=1)
    shutil.copy(original, photos / "b.png")
    index = clipforge.Index.open(tmp_path / "db", model, backend=backend)
    index.sync([photos])
    id_ = _rows(index)[str(original)]
    original.unlink()
    report = index.sync([photos])
    assert report.removed == 0
    assert _rows(index) == {str(photos / "b.png"): id_}
    assert index.meta.duplicates() == []


def _bad_files(folder: Path) -> dict[str, str]:
    """Every kind of bad file, with a word its recorded reason must contain."""
    good = write_image(folder / "good.png", seed=5)
    data = good.read_bytes()
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[60:400] = bytes(340)
    (folder / "corrupt.png").write_bytes(bytes(corrupt))
    write_image(folder / "bomb.png", seed=6, size=(100, 100))
    (folder / "dangling.png").symlink_to(folder / "missing-target.png")
    return {
        "zero.png": "empty",
        "text.jpg": "not a recognised image",
        "truncated.png": "truncated",
        "corrupt.png": "Error",
        "bomb.png": "decompression bomb",
        "dangling.png": "no such file",
    }


def test_every_bad_file_kind_is_recorded_and_never_stops_the_run(
    tmp_path, model, backend, monkeypatch
):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000)  # 100×100 > 2 × limit: a bomb
    photos = tmp_path / "photos"
    expected = _bad_files(photos)
    index = clipforge.Index.open(tmp_path / "db", model, backend=backend)
    report = index.sync([photos])
    assert report.added == 1
    errors = {Path(p).name: reason for p, reason in index.errors()}
    assert set(errors) == set(expected)
    for name, word in expected.items():
        assert word.lower() in errors[name].lower(), (name, errors[name])
    assert sorted(Path(p).name for p, _ in report.failed) == sorted(expected)
    again = index.sync([photos])  # unchanged bad files are not retried
    assert again.failed == [] and again.unchanged == 7
    write_image(photos / "zero.png", seed=7)  # fixed: indexed, error cleared
    fixed = index.sync([photos])
    assert fixed.added == 1 and "zero.png" not in {Path(p).name for p, _ in index.errors()}


@pytest.fixture(scope="module")
def collection(tmp_path_factory, model, backend):
    """40 images of varied sizes and dates in two folders, indexed once."""
    root = tmp_path_factory.mktemp("collection")
    for i in range(40):
        folder = root / ("cats" if i % 2 else "dogs")
        path = write_image(folder / f"p{i:02d}.png", seed=200 + i, size=(16 + i, 60 - i))
        os.utime(path, (1_600_000_000 + i * 86_400,) * 2)
    index = clipforge.Index.open(root / "db", model, backend=backend)
    assert index.sync([root / "cats", root / "dogs"]).added == 40
    return index


def _queries(n: int, dim: int = 32) -> np.ndarray:
    q = np.random.default_rng(9).standard_normal((n, dim)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_search_equals_brute_force_cosine_top_k(collection, model, backend):
    assert collection.store.describe()["backend"] == backend
    ids, vectors = collection.meta.vectors(None, 32)
    queries = _queries(8)
    hits = collection.search_vectors(queries, k=10)
    scores, top = brute_force(vectors, ids, queries, 10)
    assert [[h.id for h in row] for row in hits] == top.tolist()
    np.testing.assert_allclose([[h.score for h in row] for row in hits], scores, atol=1e-5)
    text = clipforge.embed_texts(model, ["a photo of a dog"])
    _, text_top = brute_force(vectors, ids, text, 5)
    assert [h.id for h in collection.search("a photo of a dog", k=5)] == text_top[0].tolist()


FILTERS = [
    Filters(path_glob="*/cats/*"),
    Filters(min_mtime=1_600_000_000 + 10 * 86_400, max_mtime=1_600_000_000 + 30 * 86_400),
    Filters(min_width=30, min_height=30),
    Filters(path_glob="*/dogs/*", min_width=20, min_score=0.85),
    Filters(min_score=0.86),
]


@pytest.mark.parametrize("exact_subset", [0, 4096], ids=["store-filter", "exact-subset"])
@pytest.mark.parametrize("filters", FILTERS)
def test_filters_equal_post_filtered_brute_force(collection, filters, exact_subset, monkeypatch):
    monkeypatch.setattr("clipforge.index.querying.EXACT_SUBSET", exact_subset)
    ids, vectors = collection.meta.vectors(None, 32)
    rows = collection.meta.rows(ids)
    queries = vectors[::8] + 0.5 * _queries(5)  # near some images: a spread of scores
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, top = brute_force(vectors, ids, queries, len(ids))
    hits = collection.search_vectors(queries, k=7, filters=filters)
    kept = dropped = 0
    for q in range(len(queries)):
        passing = [
            int(i)
            for s, i in zip(scores[q], top[q], strict=True)
            if _passes(rows[int(i)], float(s), filters)
        ]
        assert [h.id for h in hits[q]] == passing[:7]
        kept += len(passing)
        dropped += len(ids) - len(passing)
    assert kept and dropped, "each filter case must keep some images and drop others"


def _passes(row, score: float, f: Filters) -> bool:
    return (
        (f.path_glob is None or Path(row.path).match(f.path_glob.replace("*/", "", 1)))
        and (f.min_mtime is None or row.mtime_ns >= f.min_mtime * 1e9)
        and (f.max_mtime is None or row.mtime_ns <= f.max_mtime * 1e9)
        and row.width >= (f.min_width or 0)
        and row.height >= (f.min_height or 0)
        and (f.min_score is None or score >= f.min_score)
    )


def test_querying_with_another_model_is_refused(collection):
    other = perturb_(tiny_model(), seed=3)
    with pytest.raises(ModelMismatchError, match="built with model id"):
        clipforge.Index.open(collection.path, other)


def test_stale_faiss_file_is_reconciled_from_stored_vectors(tmp_path, model):
    photos = tmp_path / "photos"
    write_images(photos, 5)
    index = clipforge.Index.open(tmp_path / "db", model)
    index.sync([photos])
    stale = (tmp_path / "db" / "vectors.faiss").read_bytes()
    write_images(photos, 3, start=5)
    (photos / "img000.png").unlink()
    index.sync([photos])
    index.close()
    (tmp_path / "db" / "vectors.faiss").write_bytes(stale)  # as if the last save never happened
    reopened = clipforge.Index.open(tmp_path / "db", model)
    assert len(reopened) == 7
    _consistent(reopened)
    (tmp_path / "db" / "vectors.faiss").unlink()  # lost entirely: rebuilt
    assert len(clipforge.Index.open(tmp_path / "db", model).store) == 7


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_add_remove_and_tune(tmp_path, model, kind):
    photos = tmp_path / "photos"
    write_images(photos, 120)
    index = clipforge.Index.open(tmp_path / "db", model, options=StoreOptions(kind=kind))
    index.sync([photos])
    assert index.store.describe()["kind"] == kind
    tuned = index.rebuild()
    assert tuned["recall"] >= 0.95
    gone = [photos / f"img{i:03d}.png" for i in range(10)]
    assert index.remove(gone) == 10
    _consistent(index)
    removed_ids = set(range(1, 11))
    hits = index.search_vectors(_queries(5), k=20)
    assert all(h.id not in removed_ids for row in hits for h in row)


def test_automatic_index_kind_follows_size_and_memory_budget():
    from clipforge.index.faiss_store import choose_kind, pq_m

    assert choose_kind(5_000, 512, None) == ("flat", 0)
    assert choose_kind(1_000_000, 512, None) == ("ivf", 4096)
    assert choose_kind(1_000_000, 512, 4 * 2**30) == ("ivf", 4096)  # 2 GiB of floats fit
    assert choose_kind(1_000_000, 512, 200 * 2**20) == ("ivfpq", 4096)  # they do not
    assert choose_kind(50_000, 512, None) == ("ivf", 1024)
    assert choose_kind(15_000, 512, 10 * 2**20) == ("ivfpq", 256)  # small, but over budget
    assert pq_m(512, 1_000_000, 200 * 2**20) == 64 and pq_m(512, 1_000_000, 50 * 2**20) == 32


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_search_with_a_selective_filter_still_finds_k(tmp_path, kind):
    from clipforge.index.faiss_store import FaissStore

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((50, 32)).astype(np.float32)
    vectors = centers[rng.integers(0, 50, 6000)] + rng.standard_normal((6000, 32)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(6000, dtype=np.int64) * 3
    store = FaissStore(tmp_path, 32, StoreOptions(kind))
    store.rebuild(ids, vectors)
    truth = brute_force(vectors, ids, vectors[:100], 11)[1][:, 1:]
    assert store.tune(vectors[:100], truth, 10, ids[:100])["recall"] >= 0.95
    allowed = np.sort(rng.choice(ids, 300, replace=False))  # 5 % of the collection
    queries = _queries(20)
    _, found = store.search(queries, 10, allowed)
    keep = np.isin(ids, allowed)
    _, expected = brute_force(vectors[keep], ids[keep], queries, 10)
    assert np.isin(found, allowed).all()
    hits = sum(len(np.intersect1d(f, e)) for f, e in zip(found, expected, strict=True))
    assert hits / expected.size >= 0.95


def test_cli_milvus_backend_indexes_searches_and_rebuilds_a_lost_collection(tmp_path, model):
    import json

    from typer.testing import CliRunner

    from clipforge.cli import app
    from clipforge.index.milvus_store import LITE_FILE, VERSION_FILE

    photos, db = tmp_path / "photos", tmp_path / "db"
    write_images(photos, 6)
    ckpt = clipforge.save(model, tmp_path / "tiny")
    runner = CliRunner()
    args = ["index", str(photos), "--db", str(db), "--model", str(ckpt), "--backend", "milvus"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["index"]["store"]["backend"] == "milvus"
    assert (db / LITE_FILE).exists() and not (db / "vectors.faiss").exists()
    found = runner.invoke(app, ["search", "a red square", "--db", str(db), "-k", "3", "--json"])
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)) == 3
    (db / VERSION_FILE).unlink()  # as if the store was never saved: rebuilt from SQLite
    reopened = clipforge.Index.open(db, model)
    assert reopened.store.describe()["backend"] == "milvus" and len(reopened.store) == 6
    _consistent(reopened)


@pytest.mark.parametrize("epsilon", [None, 1.0])
def test_flat_search_through_float16_scan_equals_exact_top_k(tmp_path, monkeypatch, epsilon):
    """The float16 pre-scan with float32 re-ranking returns exactly the float32 top-k: with
    its certificate (epsilon=None), and when no certificate holds (epsilon=1.0: every
    query falls back to the float32 scan). Also with a filter, after removals, reloaded."""
    from clipforge.index import half_scan
    from clipforge.index.faiss_store import FaissStore

    if epsilon is not None:
        monkeypatch.setattr(half_scan, "EPSILON", epsilon)
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((40, 64)).astype(np.float32)
    n = half_scan.MIN_VECTORS + 2000
    vectors = centers[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, 64)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64) * 3 + 1
    store = FaissStore(tmp_path, 64, StoreOptions("flat"))
    store.rebuild(ids, vectors)
    queries = vectors[:20] + 0.3 * rng.standard_normal((20, 64)).astype(np.float32)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    allowed = np.sort(rng.choice(ids, n // 3, replace=False))

    def check(store, keep: np.ndarray) -> None:
        for q in queries:
            _, found = store.search(q[None], 10)
            assert (
                found[0].tolist()
                == brute_force(vectors[keep], ids[keep], q[None], 10)[1][0].tolist()
            )
            _, found = store.search(q[None], 10, allowed)
            sub = keep & np.isin(ids, allowed)
            assert (
                found[0].tolist() == brute_force(vectors[sub], ids[sub], q[None], 10)[1][0].tolist()
            )

    check(store, np.ones(n, bool))
    certified = [store.half.search(store.index, q[None], 10, None) is not None for q in queries]
    assert certified == [epsilon is None] * len(queries)  # who answered: float16 or float32
    store.remove(ids[:1500])
    check(store, np.arange(n) >= 1500)
    store.save(1)
    check(FaissStore(tmp_path, 64, StoreOptions("flat")), np.arange(n) >= 1500)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_search_returns_k_hits_when_probed_lists_hold_fewer(tmp_path, kind):
    """nprobe 1 / efSearch 16 alone leave rows short of k=100; the search probes wider."""
    from clipforge.index.faiss_store import FaissStore

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = FaissStore(tmp_path, 16, StoreOptions(kind))
    store.rebuild(np.arange(3000, dtype=np.int64), vectors)
    store.params["nprobe" if kind == "ivf" else "efSearch"] = 1 if kind == "ivf" else 16
    queries = vectors[:20]
    raw = store.index.search(queries, 100, params=store._search_params(None))[1]
    if kind == "ivf":
        assert (raw < 0).any()  # the unwidened search really is short
    _, found = store.search(queries, 100)
    assert (found >= 0).all()
    assert all(len(np.unique(row)) == 100 for row in found)
