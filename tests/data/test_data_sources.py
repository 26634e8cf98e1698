"""Training data sources: CSV/TSV/Parquet tables, class folders and WebDataset shards."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import clipforge
from clipforge.data import folder, tabular, webdataset_source
from clipforge.data.sources import BuildContext
from clipforge.preprocess import PreprocessConfig, build_preprocess

SIZE = 32
TRANSFORM = build_preprocess(PreprocessConfig(image_size=SIZE))
LOGGER = "clipforge.data"


def tokenize(text: str) -> torch.Tensor:
    return clipforge.tokenize(text)  # (1, 77): the sources squeeze it


def tokens_of(caption: str) -> torch.Tensor:
    return clipforge.tokenize(caption)[0]


def encode(colour: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (48, 40)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def write_image(path: Path, colour: tuple[int, int, int], fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(colour, fmt))
    return path


def write_truncated_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode((10, 200, 30), "JPEG", size=(64, 64))
    path.write_bytes(data[: len(data) // 2])
    return path


def cfg(path, **options) -> SimpleNamespace:
    path = path if isinstance(path, list) else str(path)
    return SimpleNamespace(path=path, options=options, image_size=SIZE)


def build(module, config, seed: int = 0, rank: int = 0, world_size: int = 1):
    return module.build(BuildContext(config, TRANSFORM, tokenize, seed, rank, world_size))


def warnings_for(caplog, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and text in r.getMessage()
    ]


# ----------------------------------------------------------------------------- tables

ROWS = [  # (relative path, caption, good?)
    ("img/red.png", "a red square", True),
    ("img/blue.jpg", 'a blue, "quoted"\nsquare', True),
    ("img/broken.jpg", "a broken jpeg", False),
    ("img/missing.png", "a missing file", False),
    ("img/green.png", "   ", False),  # empty caption
    ("img/green.png", "a green square", True),
]


@pytest.fixture
def image_root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_image(root / "img/red.png", (255, 0, 0))
    write_image(root / "img/blue.jpg", (0, 0, 255), "JPEG")
    write_image(root / "img/green.png", (0, 255, 0))
    write_truncated_jpeg(root / "img/broken.jpg")
    return root


def write_table(path: Path, fmt: str, image_col="filepath", caption_col="caption") -> Path:
    import pyarrow as pa

    table = pa.table({image_col: [r[0] for r in ROWS], caption_col: [r[1] for r in ROWS]})
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv as pacsv

        delimiter = "\t" if fmt == "tsv" else ","
        pacsv.write_csv(table, path, pacsv.WriteOptions(delimiter=delimiter))
    return path


def check_table(ds, caplog, root: Path) -> None:
    assert len(ds) == len(ROWS)
    for i, (rel, caption, good) in enumerate(ROWS):
        item = ds[i]
        if good:
            image, tokens = item
            assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
            assert tokens.dtype == torch.long and torch.equal(tokens, tokens_of(caption))
        else:
            assert item is None
            logged = warnings_for(caplog, f"row {i} ")
            assert len(logged) == 1 and str(root / rel) in logged[0]
    assert ds.skipped == 3
    ds[2], ds[4]  # noqa: B018 -- bad again: counted, not logged again
    assert ds.skipped == 5 and len(warnings_for(caplog, "row 2 ")) == 1
    assert "empty caption" in warnings_for(caplog, "row 4 ")[0]
    assert "no such file" in warnings_for(caplog, "row 3 ")[0]
    red = ds[0][0]
    assert red[0].mean() > red[1].mean() and red[0].mean() > red[2].mean()


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_table_formats(tmp_path, image_root, caplog, fmt):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = write_table(tmp_path / f"train.{fmt}", fmt)
    ds = build(tabular, cfg(path, root=str(image_root)))
    check_table(ds, caplog, image_root)
    clone = pickle.loads(pickle.dumps(ds))  # spawn-started DataLoader workers
    assert torch.equal(clone[0][1], ds[0][1])


def test_table_options_and_errors(tmp_path, image_root, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = write_table(tmp_path / "train.txt", "tsv", image_col="image", caption_col="text")
    opts = {"root": str(image_root), "image_column": "image", "caption_column": "text"}
    with pytest.raises(ValueError, match="table format"):
        build(tabular, cfg(path, **opts))
    ds = build(tabular, cfg(path, format="tsv", **opts))
    check_table(ds, caplog, image_root)
    with pytest.raises(ValueError, match=r"no column\(s\) \['filepath', 'caption'\]"):
        build(tabular, cfg(path, format="tsv", root=str(image_root)))
    with pytest.raises(ValueError, match="unknown tabular data options"):
        build(tabular, cfg(path, format="tsv", colums="x", **opts))
    pipe = tmp_path / "pipe.csv"  # explicit separator; absolute paths need no root
    pipe.write_text(f"filepath|caption\n{image_root / 'img/red.png'}|a red square\n")
    item = build(tabular, cfg(pipe, separator="|"))[0]
    assert torch.equal(item[1], tokens_of("a red square"))


def test_parquet_null_caption(tmp_path, image_root, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"filepath": ["img/red.png"] * 2, "caption": ["red", None]}), path)
    ds = build(tabular, cfg(path, root=str(image_root)))
    assert ds[0] is not None and ds[1] is None
    assert "missing caption" in warnings_for(caplog, "row 1 ")[0]


# ----------------------------------------------------------------------------- folders


@pytest.fixture
def folder_root(tmp_path) -> Path:
    root = tmp_path / "folder"
    write_image(root / "red_square/a.png", (255, 0, 0))
    write_image(root / "red_square/nested/b.PNG", (250, 5, 5))
    write_image(root / "blue_circle/c.jpg", (0, 0, 255), "JPEG")
    write_truncated_jpeg(root / "blue_circle/broken.jpg")
    (root / "blue_circle/notes.txt").write_text("not an image")
    write_image(root / ".hidden/x.png", (1, 2, 3))
    return root


def test_folder_captions_and_bad_images(folder_root, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    templates = ["a photo of a {c}.", "a {c}", "art of the {c}"]
    ds = build(folder, cfg(folder_root, templates=templates), seed=3)
    assert ds.classnames == ["blue circle", "red square"]
    assert [Path(p).name for p, _ in ds.samples] == ["broken.jpg", "c.jpg", "a.png", "b.PNG"]
    assert ds.targets == [0, 0, 1, 1]
    assert ds[0] is None and ds.skipped == 1
    assert len(warnings_for(caplog, "broken.jpg")) == 1
    for i in range(1, 4):
        image, tokens = ds[i]
        name = ds.classnames[ds.targets[i]]
        expected = templates[folder.template_index(3, i, 3)].replace("{c}", name)
        assert ds.caption(i) == expected and torch.equal(tokens, tokens_of(expected))
        assert image.shape == (3, SIZE, SIZE)


def test_folder_template_choice_is_deterministic(folder_root):
    options = {"templates": "openai_imagenet"}
    a = build(folder, cfg(folder_root, **options), seed=5)
    b = build(folder, cfg(folder_root, **options), seed=5)
    assert [a.caption(i) for i in range(4)] == [b.caption(i) for i in range(4)]
    assert len(a.templates) == 80
    picks = [folder.template_index(5, i, 80) for i in range(400)]
    assert picks == [folder.template_index(5, i, 80) for i in range(400)]
    assert picks != [folder.template_index(6, i, 80) for i in range(400)]
    assert len(set(picks)) > 60  # spread over the templates
    simple = build(folder, cfg(folder_root, templates="simple", classnames={"red_square": "rs"}))
    assert (
        simple.caption(2) == "a photo of a rs." and simple.caption(1) == "a photo of a blue circle."
    )
    with pytest.raises(ValueError, match="no images"):
        build(folder, cfg(folder_root / "red_square" / "nested"))


# ----------------------------------------------------------------------------- webdataset


def write_shard(path: Path, samples: list[dict]) -> Path:
    import webdataset as wds

    with wds.TarWriter(str(path)) as writer:
        for sample in samples:
            writer.write(sample)
    return path


@pytest.fixture
def shards(tmp_path) -> Path:
    """Two clean shards (8 samples) + one shard with bad samples + a missing shard."""
    d = tmp_path / "wds"
    d.mkdir()
    for s in range(2):
        write_shard(
            d / f"clean-{s:06d}.tar",
            [
                {"__key__": f"c{s}{i}", "png": encode((60 * i, 0, 0)), "txt": f"caption {s} {i}"}
                for i in range(4)
            ],
        )
    write_shard(
        d / "mixed.tar",
        [
            {"__key__": "good", "jpg": encode((0, 0, 255), "JPEG"), "txt": "a blue square"},
            {"__key__": "corrupt", "jpg": encode((0, 9, 0), "JPEG")[:100], "txt": "corrupt"},
            {"__key__": "nocaption", "png": encode((9, 9, 9)), "txt": ""},
            {"__key__": "noimage", "txt": "where is my image"},
        ],
    )
    return d


def captions_of(items) -> list[str]:
    """Decode the token ids back to text, via a lookup of known captions."""
    known = {f"caption {s} {i}" for s in range(2) for i in range(4)} | {"a blue square"}
    by_tokens = {tuple(tokens_of(c).tolist()): c for c in known}
    return [by_tokens[tuple(t.tolist())] for _, t in items]


CLEAN = "{000000..000001}"


def test_webdataset_good_and_bad_samples(shards, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    paths = [f"{shards}/clean-{CLEAN}.tar", str(shards / "mixed.tar"), str(shards / "gone.tar")]
    ds = build(webdataset_source, cfg(paths, shuffle_buffer=0))
    items = list(ds)
    good = [x for x in items if x is not None]
    assert len(items) == 8 + 4 and len(good) == 9
    assert sorted(captions_of(good)) == sorted(
        [f"caption {s} {i}" for s in range(2) for i in range(4)] + ["a blue square"]
    )
    assert all(img.shape == (3, SIZE, SIZE) and tok.shape == (77,) for img, tok in good)
    for key in ("corrupt", "nocaption", "noimage"):
        assert len(warnings_for(caplog, f"'{key}'")) == 1
    assert "truncated" in warnings_for(caplog, "'corrupt'")[0].lower()
    assert len(warnings_for(caplog, "gone.tar")) == 1  # unreadable shard: logged, skipped
    assert ds.skipped == 4
    list(ds)  # bad samples again: counted, not logged again
    assert ds.skipped == 8 and len(warnings_for(caplog, "'corrupt'")) == 1


def test_webdataset_truncated_shard_is_logged_and_skipped(shards, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    data = (shards / "clean-000000.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2 + 100])  # mid-member
    paths = [str(tmp_path / "cut.tar"), str(shards / "clean-000001.tar")]
    items = list(build(webdataset_source, cfg(paths, shuffle_buffer=0, shard_shuffle=False)))
    got = captions_of([x for x in items if x is not None])
    assert got[-4:] == [f"caption 1 {i}" for i in range(4)]
    assert 0 < len(got) - 4 < 4  # the samples before the cut still come out
    # the cut sample (or the shard) is logged, iteration goes on
    assert len(items) - len(got) == len(warnings_for(caplog, "cut.tar")) <= 1


def test_webdataset_rank_split_and_shuffle(shards):
    pattern = f"{shards}/clean-{CLEAN}.tar"
    per_rank = [
        captions_of(list(build(webdataset_source, cfg(pattern), seed=1, rank=r, world_size=2)))
        for r in range(2)
    ]
    assert all(len(c) == 4 for c in per_rank)
    assert sorted(per_rank[0] + per_rank[1]) == sorted(
        f"caption {s} {i}" for s in range(2) for i in range(4)
    )
    a = captions_of(list(build(webdataset_source, cfg(pattern, shuffle_buffer=8), seed=1)))
    b = captions_of(list(build(webdataset_source, cfg(pattern, shuffle_buffer=8), seed=1)))
    assert a == b and len(a) == 8  # shuffling is seeded
    with pytest.raises(ValueError, match="resampled"):
        build(webdataset_source, cfg(str(shards / "mixed.tar")), world_size=2)


def test_webdataset_epochs_differ_and_repeat(shards):
    pattern = f"{shards}/clean-{CLEAN}.tar"
    ds = build(webdataset_source, cfg(pattern, shuffle_buffer=8), seed=4)
    epochs = [captions_of(list(ds)) for _ in range(3)]  # persistent-worker style: passes
    assert all(sorted(e) == sorted(epochs[0]) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3
    fresh = build(webdataset_source, cfg(pattern, shuffle_buffer=8), seed=4)
    assert captions_of(list(fresh)) == epochs[0]
    fresh.set_epoch(1)  # non-persistent workers: a fresh copy told the epoch
    assert captions_of(list(fresh)) not in (epochs[0], captions_of(list(ds)))


def test_webdataset_resampled_and_epoch_quota(shards):
    pattern = f"{shards}/clean-{CLEAN}.tar"
    opts = {"resampled": True, "samples_per_epoch": 20, "shuffle_buffer": 4}
    a = build(webdataset_source, cfg(pattern, **opts), seed=2, rank=1, world_size=4)
    first = captions_of(list(a))
    assert len(first) == 20  # more than one pass over the data
    again = build(webdataset_source, cfg(pattern, **opts), seed=2, rank=1, world_size=4)
    assert captions_of(list(again)) == first
    other = build(webdataset_source, cfg(pattern, **opts), seed=2, rank=0, world_size=4)
    assert captions_of(list(other)) != first
    # not resampled: a rank cycles over its shards until the quota is met
    ds = build(webdataset_source, cfg(pattern, samples_per_epoch=10), rank=1, world_size=2)
    got = captions_of(list(ds))
    assert len(got) == 10 and len(set(got)) == 4


@pytest.mark.parametrize("world_size", [1, 2])
def test_webdataset_dataloader_workers_see_each_sample_once(shards, world_size):
    pattern = f"{shards}/clean-{CLEAN}.tar"
    seen = []
    for rank in range(world_size):  # world_size 2: one shard per rank, two workers
        ds = build(webdataset_source, cfg(pattern), rank=rank, world_size=world_size)
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        seen += captions_of(list(loader))
    assert sorted(seen) == sorted(f"caption {s} {i}" for s in range(2) for i in range(4))
