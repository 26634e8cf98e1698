"""The import graph as a contract: layers (import-linter), no circles, and function-level
imports only for optional dependencies (CONTRIBUTING.md, "Imports")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from .conftest import REPO

PACKAGE = REPO / "src" / "clipforge"
#: libraries a module may import inside a function: the optional extras (pyproject.toml),
#: and huggingface_hub (only the hub download code needs it). The CLI's command bodies
#: are exempt (see the test below).
OPTIONAL = {
    "faiss", "ray", "pymilvus", "milvus_lite", "pyarrow", "pandas", "sklearn", "yaml",
    "onnx", "onnxruntime", "tokenizers", "matplotlib", "webdataset", "tensorboard",
    "uvicorn", "fastapi", "starlette", "open_clip", "transformers", "sentencepiece", "scipy",
    "httpx", "psutil", "pillow_heif", "clip_benchmark", "huggingface_hub",
    "av", "watchdog",  # the video and watch extras
    "rawpy", "pillow_avif",  # the photos extra: RAW previews, AVIF on Pillow < 11.3
    "rapidocr_onnxruntime",
}  # fmt: skip


#: (file, import) pairs allowed inside a function, each for a stated reason
EXEMPT = {
    # clipforge.onnx runs exported models with onnxruntime alone: torch only for export
    ("onnx/__init__.py", ".export"),
    ("preprocess/transforms.py", "torch"),  # ...and preprocesses and tokenizes with
    ("tokenizer/base.py", "torch"),  # numpy alone: torch only for tensor outputs
    ("preprocess/naflex.py", "torch"),  # (NaFlex patches too)
    ("preprocess/naflex.py", "torch.utils.data"),
}


def _layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [m.strip() for layer in contract["layers"] for m in layer.split("|")]


def test_import_linter_contract_is_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_every_top_level_module_has_a_layer():
    modules = {
        f"clipforge.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert modules - set(_layers()) == set(), "add the new module to a layer in pyproject.toml"


def test_no_module_imports_another_in_a_circle():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_import_cycles.py")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom):
                name = "." * inner.level + (inner.module or "")
            elif isinstance(inner, ast.Import):
                name = inner.names[0].name
            else:
                continue
            found.append((inner.lineno, name))
    return found


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_function_level_imports_are_optional_dependencies_only(path):
    """The CLI's command bodies are exempt: importing the API there keeps `clipforge --help`
    at ~0.3 s instead of ~3 s (torch and the rest load only for the command that runs)."""
    relative = str(path.relative_to(PACKAGE))
    own = [
        f"line {line}: {name}"
        for line, name in _function_level_imports(path)
        if (relative, name) not in EXEMPT
        and not name.startswith("torch.distributed")  # absent from some torch builds
        and (name.startswith(".") or name.split(".")[0] not in OPTIONAL)
    ]
    assert own == [], f"{path.name}: move these imports to the top of the module: {own}"
