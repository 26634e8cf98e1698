"""The small training configs behind ``benchmarks/search.py --weights`` load and say what they train."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipforge.train.train_config import load_config

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize(
    ("name", "kind", "steps", "batch"),
    [
        ("train_cifar10_small.yaml", "folder", 400, 128),
        ("train_flickr_small.yaml", "csv", 80, 100),
        ("train_flickr_coca_small.yaml", "csv", 80, 100),
    ],
)
def test_small_search_configs_load(name, kind, steps, batch):
    cfg = load_config(EXAMPLES / name, ["data.path=/data/x", "output_dir=/tmp/out"])
    assert cfg.data.kind == kind and cfg.data.path == "/data/x" and cfg.output_dir == "/tmp/out"
    assert (cfg.steps, cfg.batch_size, cfg.eval_every) == (steps, batch, 0)
    vision = cfg.model.architecture["vision"]
    assert (vision["image_size"], vision["patch_size"]) == (32, 8)


def test_flickr_config_reads_a_tsv_under_its_root():
    cfg = load_config(EXAMPLES / "train_flickr_small.yaml")
    assert cfg.data.path.endswith("train800.tsv")
    assert cfg.data.options == {"root": "/tmp/flickr8k-1k", "draft": True}
