"""Fail if any modules of the package import each other in a circle.

import-linter's layers contract (pyproject.toml) keeps the top-level packages in order;
this check covers what it cannot see: circles between modules inside one package (e.g.
``index/index.py`` <-> ``index/querying.py``). Imports under ``if TYPE_CHECKING:`` are not
run, so they are not counted; imports inside functions are (they still tie the modules).
A package's ``__init__`` re-exporting its own submodules is not a circle.
"""

from __future__ import annotations

import sys

import grimp


def module_cycles(package: str = "clipforge") -> list[list[str]]:
    """Strongly connected groups (size > 1) of the package's module import graph."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=True)
    edges: dict[str, set[str]] = {m: set() for m in graph.modules}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported in edges and not _is_own_package(imported, module):
                edges[module].add(imported)
    return [sorted(c) for c in _strongly_connected(edges) if len(c) > 1]


def _is_own_package(imported: str, importer: str) -> bool:
    """``pkg.sub`` importing ``pkg`` (its own package's __init__) is not an edge we count."""
    return importer.startswith(imported + ".")


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


def main() -> int:
    cycles = module_cycles()
    for cycle in cycles:
        print("import circle: " + " <-> ".join(cycle))
    print(f"{len(cycles)} import circle(s)")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
