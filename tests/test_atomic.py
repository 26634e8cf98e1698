"""Atomic writes: unique temporary names, nothing torn or left behind."""

from __future__ import annotations

import pytest

from clipforge.atomic import atomic_path, write_text_atomic


def test_two_open_writers_of_one_file_get_distinct_temporary_names(tmp_path):
    target = tmp_path / "vectors.faiss"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_bytes(b"one")
        second.write_bytes(b"two")
    assert target.read_bytes() == b"one"  # the outer block renames last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.faiss"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
