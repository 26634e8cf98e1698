"""The README and the documentation pages (docs/): their Python code blocks run as written
(per page, in order, in one namespace per page), their relative links resolve, the README
stays a front page, and benchmark result files render into the speed page.

A block fenced exactly as ```` ```python ```` runs; a sketch (missing imports or bodies) is
fenced with a title, ```` ```python title="sketch: ..." ````, and is not run."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from .conftest import REPO, shared_path

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]


def page_id(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", t)]


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most 200: move text to docs/)"
    assert lines[2:6] == [
        "```bash",
        "bash scripts/demo.sh     # fresh machine → .venv → train a small CLIP from scratch on CPU "
        "(≤ 5 min), evaluate, report",
        "bash scripts/test.sh     # fresh machine → .venv with test extras → ruff + the whole "
        "test suite",
        "```",
    ]


def test_pages_have_python_blocks():
    assert len(python_blocks(REPO / "README.md")) >= 1
    assert len(python_blocks(REPO / "docs" / "guide" / "inference.md")) >= 2


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_relative_links_resolve(path: Path):
    broken = []
    for target in relative_links(path):
        file = target.split("#", 1)[0]
        if file and not (path.parent / file).exists():
            broken.append(target)
    assert not broken, f"{page_id(path)}: links to missing files: {broken}"


def test_link_check_sees_broken_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "[a](missing.md) [b](https://x.org) `[c](not-a-link.md)`\n"
        "```bash\n[d](in-code.md)\n```\n![e](img.png#frag)\n",
        encoding="utf-8",
    )
    assert relative_links(page) == ["missing.md", "img.png#frag"]


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_results_file_renders_into_pages(tmp_path):
    results = load_module(REPO / "benchmarks" / "results.py", "bench_results")
    hook = load_module(REPO / "docs" / "hooks" / "results.py", "docs_results_hook")
    page = "before\n<!-- results: speedy -->\nafter"
    absent = hook.on_page_markdown(page.replace("speedy", "nothing_here_yet"))
    assert "Not measured yet" in absent and "python benchmarks/nothing_here_yet.py" in absent
    written = results.write_result("speedy", {"rows": [{"task": "a|b", "ratio": 6.61}]}, tmp_path)
    record = json.loads(written.read_text(encoding="utf-8"))
    assert record["machine"]["cores"] >= 1 and record["machine"]["torch"]
    assert record["date"].endswith("Z") and record["command"].startswith("python ")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file
    table = hook.render("speedy", None, tmp_path)
    assert "| task | ratio |" in table and "| a\\|b | 6.61 |" in table
    assert record["date"] in table


def test_speed_page_has_no_hand_copied_tables():
    text = (REPO / "docs" / "speed.md").read_text(encoding="utf-8")
    assert "|---" not in text, "speed figures come from benchmarks/results/*.json markers"
    assert len(re.findall(r"<!-- results: \w+ -->", text)) >= 8


def check_readme(tmp: Path, ns: dict) -> None:
    assert ns["probs"].shape == (1, 2)


def check_inference(tmp: Path, ns: dict) -> None:
    assert ns["probs"].shape == (1, 2)
    assert (tmp / "sim.png").stat().st_size > 0
    assert (tmp / "onnx_dir" / "text_encoder.onnx").is_file()
    assert ns["emb"].embeddings.shape == (len(ns["paths"]), 512)


def check_features(tmp: Path, ns: dict) -> None:
    assert tuple(ns["out"]["image_intermediates"][0].shape) == (2, 49, 768)
    assert tuple(ns["sd1"].prompt_embeds.shape) == (1, 77, 768)
    assert tuple(ns["sd2"].prompt_embeds.shape) == (1, 77, 1024)
    assert tuple(ns["xl"].prompt_embeds.shape) == (1, 77, 2048)
    assert tuple(ns["xl"].pooled_prompt_embeds.shape) == (1, 1280)
    assert tuple(ns["feats"].shape) == (1, 576, 1024)
    assert (tmp / "dog.png").stat().st_size > 0


def check_search(tmp: Path, ns: dict) -> None:
    assert ns["report"].added == 11  # the 8 sample photos and the 3 phone shots (HEIC, JPEG, AVIF)
    assert [h.camera for h in ns["paris"]] == ["Apple iPhone 15"]
    assert [h.taken[:10] for h in ns["summer"]] == ["2024-07-01"]


def check_deployment(tmp: Path, ns: dict) -> None:
    assert ns["int8"].quantization_report.image_cosine >= 0.99
    assert ns["vectors"].shape == (1, 512)


ASSERTIONS = {  # what a page's blocks must leave behind, beyond running without error
    "README.md": check_readme,
    "docs/guide/inference.md": check_inference,
    "docs/guide/features.md": check_features,
    "docs/guide/search.md": check_search,
    "docs/guide/deployment.md": check_deployment,
}
RUNNABLE = [p for p in PAGES if python_blocks(p)]


def test_every_runnable_page_is_checked():
    assert {page_id(p) for p in RUNNABLE} >= set(ASSERTIONS)


@pytest.mark.slow
@pytest.mark.parametrize("path", RUNNABLE, ids=page_id)
def test_python_blocks_run_as_written(path: Path, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    shutil.copytree(shared_path("data", "photos"), photos)
    Image.open(photos / "chelsea.png").convert("RGB").save(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_page"}
    for i, block in enumerate(python_blocks(path)):
        where = f"{page_id(path)} python block {i + 1}"
        try:
            exec(compile(block, where, "exec"), namespace)
        except Exception as err:  # name the block: the traceback points into it
            raise AssertionError(f"{where} failed: {err!r}") from err
    if page_id(path) in ASSERTIONS:
        ASSERTIONS[page_id(path)](tmp_path, namespace)
