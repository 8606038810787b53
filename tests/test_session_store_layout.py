"""How the session_store package is put together: no import cycles, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import session_store

PACKAGE = Path(session_store.__file__).parent


def _imports() -> dict[str, set[str]]:
    """session_store module -> the session_store modules it imports (at any depth in its code)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        name = f"session_store.{path.stem}" if path.stem != "__init__" else "session_store"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("session_store."):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("session_store.")}
        graph[name] = found
    return graph


def test_the_modules_of_the_session_store_import_one_another_without_a_cycle():
    graph = _imports()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_no_module_of_the_session_store_outgrows_a_screenful_of_screens():
    sizes = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.glob("*.py")}
    assert {name: lines for name, lines in sizes.items() if lines > 420} == {}
