"""``embed --engine ray`` under hostile input (issue 22): file names that are not UTF-8
are carried losslessly and never stop a batch; an output that is a file is a clear error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipforge.distributed import embed
from clipforge.distributed.ray_embed import EmbedOutputError
from tests.distributed.test_ray_embed import local_ray, model_dir  # noqa: F401  (fixtures)


def _odd_folder(root: Path) -> list[bytes]:
    """Three good PNGs (two with names that are not UTF-8) and a broken one, also not UTF-8."""
    names = [b"plain.png", b"caf\xe9.png", b"\xff\xfe-odd.png"]
    rng = np.random.default_rng(3)
    root.mkdir()
    for name in names:
        pixels = rng.integers(0, 255, (24, 28, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.fsdecode(os.fsencode(root) + b"/" + name), format="PNG")
    with open(os.fsencode(root) + b"/broken-\xe9.png", "wb") as f:
        f.write(b"not a png")
    return [os.fsencode(root) + b"/" + n for n in names]


@pytest.mark.slow  # a local Ray instance
def test_names_that_are_not_utf8_are_embedded_and_kept_losslessly(local_ray, model_dir, tmp_path):  # noqa: F811
    """Before: Arrow refused the surrogate-escaped name and the whole run stopped."""
    good = _odd_folder(tmp_path / "odd")
    out = tmp_path / "out"
    report = embed(tmp_path / "odd", out, model=model_dir, shard_size=2, batch_size=2)
    assert report.n_embedded == 3
    assert [reason != "" and "broken-\\xe9.png" in path for path, reason in report.failures] == [
        True
    ]
    rows: dict[bytes, str] = {}
    for shard in sorted(out.glob("shard-*.parquet")):
        table = pq.read_table(shard).to_pydict()
        rows.update(zip(table["path_bytes"], table["path"], strict=True))
    assert sorted(rows) == sorted(good)  # the exact bytes of every name
    assert rows[good[1]].endswith("caf\\xe9.png")  # shown with \xNN
    assert all(Path(os.fsdecode(raw)).is_file() for raw in rows)  # open() finds each again


def test_output_that_is_a_file_is_a_clear_error(tmp_path, model_dir):  # noqa: F811
    (tmp_path / "in").mkdir()
    target = tmp_path / "out.parquet"
    target.write_text("x")
    with pytest.raises(EmbedOutputError, match=f"output {target} is a file; give a directory"):
        embed(tmp_path / "in", target, model=model_dir)
    from clipforge.cli import app

    args = ["embed", str(tmp_path / "in"), "--engine", "ray", "-o", str(target), "-m",
            str(model_dir)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "is a file; give a directory" in result.output, result.output
    assert target.read_text() == "x"
