"""The package's layers import only downward (ARCHITECTURE.md).

Every module of ``src/ddlnl`` is read with ``ast`` and every import of a ddlnl module is taken,
also those inside functions (a lazy import is still a dependency). Each module belongs to one
layer; an import may go to the same layer or a lower one, never a higher one, and no chain of
imports may lead back to where it started (a cycle, also within one layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ddlnl"

# Lowest first. A module in a package (``methods.dm``) takes its package's layer unless listed.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundations", {"errors", "_version", "progress", "utils", "config", "formatting", "precision"}),
    ("data", {"data"}),
    ("ingredients", {"noise", "models", "augment", "curves", "correction", "longtail"}),
    ("training", {"train", "synthetic", "diagnostics", "study", "figures"}),
    ("methods", {"methods", "experts"}),
    ("analysis", {"estimate", "label_issues", "compare", "robust", "denoise"}),
    ("experiment setup", {"job", "evaluation", "describe", "plan", "remedy"}),
    ("cells", {"cells"}),
    ("runs", {"pipeline", "sweep", "jobs"}),
    ("results", {"results", "report"}),
    ("interface", {"cli", "api", "", "__main__"}),
]


def module_name(path: Path) -> str:
    """``src/ddlnl/methods/dm.py`` -> ``methods.dm``; the package itself is ``""``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name: str) -> int:
    probe = name
    while True:
        for i, (_, members) in enumerate(LAYERS):
            if probe in members:
                return i
        if "." not in probe:
            raise AssertionError(f"module ddlnl.{name} has no layer: add it to LAYERS in {Path(__file__).name} "
                                 "and to ARCHITECTURE.md")
        probe = probe.rsplit(".", 1)[0]


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ddlnl modules that ``name`` imports anywhere in its file (top level or in functions)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found: set[str] = set()

    def add(target: str) -> None:
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in known and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "ddlnl" or alias.name.startswith("ddlnl."):
                    add(alias.name[len("ddlnl."):] if "." in alias.name else "")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "ddlnl" or node.module.startswith("ddlnl.")):
                module = node.module[len("ddlnl."):] if "." in node.module else ""
            else:
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}" if module else alias.name
                add(full if full in known else module)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def show(name: str) -> str:
    return f"ddlnl.{name}" if name else "ddlnl"


def test_every_module_has_a_layer():
    names = list(modules())
    assert names
    assert all(0 <= layer_of(name) < len(LAYERS) for name in names)  # layer_of raises for a module without one


def test_no_module_imports_a_higher_layer():
    graph = import_graph()
    upward = [f"{show(a)} ({LAYERS[layer_of(a)][0]}) imports {show(b)} ({LAYERS[layer_of(b)][0]})"
              for a, targets in sorted(graph.items()) for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(map(show, c)) for c in found)


def test_the_walk_sees_imports_inside_functions_and_relative_forms(tmp_path):
    # The checker itself: a lazy import inside a function, ``from . import x``, ``from ..x import y``
    # and ``import ddlnl.x`` are all edges; a cycle through them is found.
    pkg = tmp_path / "ddlnl"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (pkg / "b.py").write_text("from . import c\n")
    (pkg / "c.py").write_text("import ddlnl.sub.d\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "d.py").write_text("from ..a import f\n")
    global PACKAGE
    saved = PACKAGE
    PACKAGE = pkg
    try:
        graph = import_graph()
    finally:
        PACKAGE = saved
    assert graph["a"] == {"b"} and graph["b"] == {"c"} and graph["c"] == {"sub.d"} and graph["sub.d"] == {"a"}
    assert cycles(graph) == [["a", "b", "c", "sub.d"]]

