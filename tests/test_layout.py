"""The code's shape: no import cycles among nas's modules, no module past ~500 lines, and
test modules that never import each other (shared helpers live in helper modules)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The installed package maps these folders (pyproject.toml's package-dir).
PACKAGE_DIRS = {"nas": REPO / "nas", "nas.db": REPO / "db", "nas.dashboard": REPO / "dashboard"}
MAX_MODULE_LINES = 540  # "about 500"; Alembic migrations are exempt


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if name.startswith("nas.db.") and name != "nas.db" and (REPO / "db") not in path.parents:
                continue  # nas/db would shadow; it does not exist, but be exact
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every nas module `path` imports, at module level or inside functions (a lazy import
    is still an edge: a cycle through one only waits for the first call), except under
    `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in out if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            strongconnect(v)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from nas.b import x\n")
    b.write_text("def f():\n    from nas.a import y\n")
    modules = {"nas.a": a, "nas.b": b}
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    assert _cycles(graph) == [["nas.a", "nas.b"]]


def test_no_import_cycles_among_nas_modules():
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    assert len(graph) > 40  # the walk found the package
    assert _cycles(graph) == []


def test_no_module_is_longer_than_about_500_lines():
    long = {name: n for name, path in _modules().items()
            if "migrations" not in path.parts and (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_test_modules_do_not_import_each_other():
    offenders = {}
    for path in sorted((REPO / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        named = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        named |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        others = sorted(m for m in named if m.startswith("tests.test_"))
        if others:
            offenders[path.name] = others
    assert offenders == {}
