"""The package's lazy exports are visible to type checkers and all resolve."""

from __future__ import annotations

import ast
from pathlib import Path

import clipforge

INIT = Path(clipforge.__file__)


def _type_checking_imports() -> dict[str, str]:
    """``name -> module`` of the imports under ``if TYPE_CHECKING:`` in __init__.py."""
    tree = ast.parse(INIT.read_text())
    block = next(
        node for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    names: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1, ast.dump(node)
        for alias in node.names:
            names[alias.asname or alias.name] = node.module or ""
    return names


def test_type_checking_imports_mirror_the_lazy_exports():
    assert _type_checking_imports() == clipforge._EXPORTS


def test_every_lazy_export_resolves_to_the_object_its_module_defines():
    import importlib

    for name, module in clipforge._EXPORTS.items():
        value = getattr(clipforge, name)
        assert value is getattr(importlib.import_module(f"clipforge.{module}"), name), name
