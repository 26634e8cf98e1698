"""Evaluation readers under hostile input (issue 22): archive tables naming files outside
the archive, readers that must apply ``limit`` before reading, labels out of range, signed
IDX labels, name-labelled tables with ``--classnames``, capped archive extraction."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.data.archive import ArchiveLimitError, Limits, extract_archive
from clipforge.data.clip_benchmark_wds import read_shards
from clipforge.data.data_config import DataConfig
from clipforge.data.guards import DatasetPathError, LabelError
from clipforge.data.mnist import load_mnist, read_idx
from clipforge.errors import InputError
from clipforge.eval.datasets import load_captions, load_classification


def _png(size: int = 8, noise: bool = False) -> bytes:
    buffer = io.BytesIO()
    if noise:
        pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
    else:
        Image.new("RGB", (size, size), (9, 99, 199)).save(buffer, format="PNG")
    return buffer.getvalue()


def _tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def _archive_data(path: Path, cache: Path) -> DataConfig:
    return DataConfig(kind="archive", path=str(path), options={"cache_dir": str(cache)})


# ------------------------------------------------------------------ paths outside the archive
@pytest.mark.parametrize("escape", ["ABSOLUTE", "../outside.png", "a/../../outside.png"])
def test_archive_table_rows_may_not_escape_the_archive(tmp_path, escape):
    secret = tmp_path / "outside.png"
    secret.write_bytes(_png())
    name = str(secret) if escape == "ABSOLUTE" else escape
    table = f"filepath,label,caption\nok.png,0,fine\n{name},1,leak\n".encode()
    archive = _tar(tmp_path / "set.tar.gz", {"set/ok.png": _png(), "set/data.csv": table})
    data = _archive_data(archive, tmp_path / "cache")
    message = f"row 2: path {name} escapes the dataset root"
    with pytest.raises(DatasetPathError, match=message.replace(".", r"\.")):
        load_classification(data)
    with pytest.raises(DatasetPathError, match="escapes the dataset root"):
        load_captions(data)


def test_archive_table_inside_the_archive_still_loads(tmp_path):
    table = b"filepath,label\nimgs/a.png,0\n./imgs/b.png,1\n"
    members = {"s/imgs/a.png": _png(), "s/imgs/b.png": _png(), "s/t.csv": table}
    task = load_classification(_archive_data(_tar(tmp_path / "s.tgz", members), tmp_path / "c"))
    assert task.labels.tolist() == [0, 1] and all(Path(p).is_file() for p in task.images)


def test_links_leading_out_of_the_root_are_refused(tmp_path):
    from clipforge.data.guards import confine_paths

    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(DatasetPathError, match="row 1: path link/x.png escapes"):
        confine_paths(["link/x.png"], tmp_path / "root", "t.csv")


# ------------------------------------------------------------------ labels
_HUGE_LABEL = """
import resource, sys
import pyarrow.csv
from clipforge.data.data_config import DataConfig
from clipforge.eval.datasets import load_classification
from clipforge.errors import InputError
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
          if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**31, vm + 2**31))  # 2 GiB more than imports
try:
    load_classification(DataConfig(kind="csv", path=sys.argv[1]))
except InputError as err:
    print("refused:", err)
"""


def test_a_label_of_three_billion_is_refused_before_allocating(tmp_path):
    """Before: 3e9 default class names were built (MemoryError under a 2 GiB margin)."""
    table = tmp_path / "t.csv"
    table.write_text("filepath,label\na.png,3000000000\n")
    run = subprocess.run([sys.executable, "-c", _HUGE_LABEL, str(table)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "row 1: label 3000000000 is out of range for 100000 classes" in run.stdout


def test_labels_are_checked_against_the_given_class_names(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("filepath,label\na.png,3\nb.png,10\n")
    with pytest.raises(LabelError, match="row 2: label 10 is out of range for 10 classes"):
        load_classification(DataConfig(kind="csv", path=str(table)), "cifar10")


def test_classnames_work_with_name_labelled_tables(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("bird\ncat\ndog\n")
    table = tmp_path / "t.csv"
    table.write_text("filepath,label\na.png,dog\nb.png,cat\n")
    task = load_classification(DataConfig(kind="csv", path=str(table)), str(names))
    assert task.classnames == ["bird", "cat", "dog"] and task.labels.tolist() == [2, 1]
    table.write_text("filepath,label\na.png,dog\nb.png,cow\n")
    with pytest.raises(LabelError, match="row 2: label 'cow' is not among the class names"):
        load_classification(DataConfig(kind="csv", path=str(table)), str(names))


# ------------------------------------------------------------------ IDX files
def _write_idx(path: Path, array: np.ndarray, code: int, dtype: str = ">u1") -> None:
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + array.astype(dtype).tobytes())


def _mnist(root: Path, n: int, labels: np.ndarray | None = None, code: int = 0x08) -> np.ndarray:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    _write_idx(root / "t10k-images-idx3-ubyte.gz", images, 0x08)
    labels = rng.integers(0, 10, n) if labels is None else labels
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", labels, code, ">i1" if code == 9 else ">u1")
    return images


def test_signed_idx_labels_are_refused_not_wrapped(tmp_path):
    _mnist(tmp_path, 3, np.array([1, -1, 2]), code=0x09)  # int8 labels
    with pytest.raises(LabelError, match="item 1: label -1 is negative"):
        load_classification(DataConfig(kind="mnist", path=str(tmp_path)))


def test_idx_labels_beyond_the_class_count_are_refused(tmp_path):
    _mnist(tmp_path, 3, np.array([1, 12, 2]))
    with pytest.raises(LabelError, match="item 1: label 12 is out of range for 10 classes"):
        load_mnist(tmp_path, n_classes=10)


def test_idx_limit_reads_only_the_kept_items(tmp_path):
    """Before: the whole decompressed file (20000 x 784 bytes) was read, then subset."""
    images = _mnist(tmp_path, 20_000)
    tracemalloc.start()
    try:
        task = load_classification(DataConfig(kind="mnist", path=str(tmp_path)), limit=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(task.images) == 5 and peak < 4 * 2**20, peak  # whole file: 15.7 MB
    keep = np.unique(np.linspace(0, 19_999, 5).round().astype(np.int64))
    assert np.array_equal(np.asarray(task.images[1])[..., 0], images[keep[1]])


def test_idx_header_that_does_not_match_the_file_is_refused_unread(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + np.asarray([2**31 - 1, 28, 28], ">i4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(28 * 28))
    with pytest.raises(InputError, match="does not match the file size"):
        read_idx(path)
    plain = tmp_path / "plain-idx1-ubyte"
    plain.write_bytes(bytes([0, 0, 8, 1]) + np.asarray([100], ">i4").tobytes() + bytes(99))
    with pytest.raises(InputError, match="does not match the file size"):
        read_idx(plain)


# ------------------------------------------------------------------ WebDataset shards
def _shards(root: Path, n: int, noise: bool = True) -> None:
    (root / "test").mkdir(parents=True)
    members = {}
    for i in range(n):
        members[f"s{i:03d}.png"] = _png(160, noise)
        members[f"s{i:03d}.cls"] = str(i % 2).encode()
    _tar(root / "test" / "0.tar", members, mode="w")
    (root / "classnames.txt").write_text("cat\ndog\n")


def test_webdataset_limit_streams_and_reads_only_kept_samples(tmp_path):
    """Before: every member of every shard (40 x ~77 kB) was read before the subset."""
    _shards(tmp_path, 40)
    tracemalloc.start()
    try:
        samples = read_shards(tmp_path, "test", limit=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [s["__key__"] for s in samples] == ["s000", "s039"]
    assert peak < 1 * 2**20, peak  # all samples: ~3 MB


def test_webdataset_member_over_the_cap_is_a_failure_not_read(tmp_path):
    _shards(tmp_path, 2, noise=False)
    samples = read_shards(tmp_path, "test", max_member_bytes=10)
    assert all("png" not in s and "bytes > 10" in s["__error__"] for s in samples)
    task = load_classification(DataConfig(kind="clip_benchmark", path=str(tmp_path)))
    assert len(task.images) == 2 and task.failures == []  # default cap: both read
    task = load_classification(DataConfig(kind="clip_benchmark", path=str(tmp_path)), limit=1)
    assert len(task.images) == 1


# ------------------------------------------------------------------ archive extraction
def test_extraction_caps_refuse_and_leave_nothing_behind(tmp_path):
    members = {f"d/{i}.bin": bytes(1000) for i in range(5)}
    archive = _tar(tmp_path / "a.tar.gz", members)
    cache = tmp_path / "cache"
    with pytest.raises(ArchiveLimitError, match="more than 3 members"):
        extract_archive(archive, cache, Limits(max_members=3))
    assert list(cache.iterdir()) == []
    with pytest.raises(ArchiveLimitError, match=r"more than 2500 bytes .*'d/2\.bin'"):
        extract_archive(archive, cache, Limits(max_bytes=2500))
    assert list(cache.iterdir()) == []
    assert len(list(extract_archive(archive, cache).glob("d/*.bin"))) == 5


def test_failed_extraction_is_one_error_and_leaves_nothing(tmp_path):
    """Before: an OSError mid-extraction (a file where a directory must go) escaped as a
    traceback and left the staging directory in the cache."""
    archive = _tar(tmp_path / "b.tar.gz", {"x": b"file", "x/y.png": _png()})
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="cannot extract"):
        extract_archive(archive, cache)
    assert list(cache.iterdir()) == []
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(InputError, match="cannot extract"):
        extract_archive(truncated, cache)
    assert list(cache.iterdir()) == []


def test_archive_caps_are_data_options(tmp_path):
    members = {"s/t.csv": b"filepath,label\na.png,0\n", "s/a.png": _png()}
    data = _archive_data(_tar(tmp_path / "s.tgz", members), tmp_path / "c")
    data.options["max_members"] = 1
    with pytest.raises(ArchiveLimitError, match="max_members"):
        load_classification(data)
