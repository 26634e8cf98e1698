"""Every Python code block of the README runs as written (in order, in one namespace), in a
directory holding the files the README names: ``cat.jpg`` and a ``photos/`` folder."""

from __future__ import annotations

import re
import shutil

import pytest
from PIL import Image

from .conftest import REPO, shared_path

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[str]:
    return BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    assert len(readme_blocks()) >= 2


@pytest.mark.slow
def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    shutil.copytree(shared_path("data", "photos"), photos)
    Image.open(photos / "chelsea.png").convert("RGB").save(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(readme_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:  # name the block: the traceback points into it
            raise AssertionError(f"README python block {i + 1} failed: {err!r}") from err
    assert (tmp_path / "sim.png").stat().st_size > 0
    assert (tmp_path / "onnx_dir" / "text_encoder.onnx").is_file()
    assert namespace["probs"].shape == (1, 2)
    assert namespace["emb"].embeddings.shape == (len(namespace["paths"]), 512)
