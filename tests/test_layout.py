"""The package layout shows the pipeline: no import cycles, and the top level holds only shared pieces."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cds_service"
# What may stay at the top of cds_service/: the entry points and what every layer shares.
TOP_LEVEL = {"__init__.py", "cli.py", "config.py", "datafiles.py", "errors.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that `path` imports anywhere, deferred imports in functions included (a
    cycle hidden in a function body is still a cycle); TYPE_CHECKING blocks never run and do not count."""
    found: set[str] = set()
    body: list[ast.AST] = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            body += node.orelse
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} & known
            found |= {f"{node.module}.{alias.name}" for alias in node.names} & known
        else:
            body += list(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    # A package's __init__ importing its own submodules (and the lazy cds_service.create_app) is not a
    # cycle between parts of the pipeline.
    return {
        name: {m for m in imports_of(path, known) if not _within(m, name) and m != "cds_service"}
        for name, path in paths.items()
    }


def _within(module: str, package: str) -> bool:
    return module.startswith(package + ".") or package.startswith(module + ".")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycles() -> None:
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_top_level_holds_only_shared_modules() -> None:
    assert {p.name for p in PACKAGE.glob("*.py")} == TOP_LEVEL
