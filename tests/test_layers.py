"""The engine's layers, read from its sources (an AST walk over every import, top-level and
inside functions): the import graph is a DAG but for the one documented lazy edge, and no
module grows past 500 lines. So the knot that issue 12 undid cannot grow back."""
from __future__ import annotations

import ast
import pathlib

import sharedcompute

PACKAGE = pathlib.Path(sharedcompute.__file__).parent
# The one upward edge, taken lazily: Kernel.__call__ runs a kernel in process through the
# backend (as dask's Array.map_overlap imports dask.array.overlap inside the method).
ALLOWED_LAZY_UPWARD = {("kernel", "execute")}
# What a worker process imports: never the executors, the backends or the facade.
WORKER_SIDE = {"_worker", "_task", "plan", "kernel", "_compile", "_identity", "partition", "shared",
               "files", "segments", "doorbell", "errors", "_system"}
NOT_FOR_WORKERS = {"_executors", "execute", "pool", "dask_backend", "verify", "cli", "bench",
                   "_dispatch", "_start", "tasks", "_imap", "_cache", "bind"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if parts and parts[0] == "kernels":
            continue  # the kernel library: above the engine, imports only its public API
        out[".".join(parts) or "__init__"] = path
    return out


def _imports(name: str, path: pathlib.Path) -> set[tuple[str, bool]]:
    """(imported engine module, lazy?) for every import in the module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    found = set()
    top = {id(n) for n in tree.body}

    def add(target: str, node: ast.AST) -> None:
        head = target.split(".")[0]
        if target:
            found.add((head if head != "bench" else "bench", id(node) not in top))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                mod = ".".join(base + ([node.module] if node.module else []))
                if not node.module:
                    for alias in node.names:
                        add(".".join(base + [alias.name]), node)
                    continue
                add(mod, node)
            elif node.module and node.module.startswith("sharedcompute."):
                add(node.module.split(".", 1)[1], node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sharedcompute."):
                    add(alias.name.split(".", 1)[1], node)
    return {(t, lazy) for t, lazy in found if t != name.split(".")[0] and t != "kernels"}


def _graph() -> dict[str, set[tuple[str, bool]]]:
    graph: dict[str, set[tuple[str, bool]]] = {}
    for name, path in _modules().items():
        graph.setdefault(name.split(".")[0], set()).update(_imports(name, path))
    return graph


def test_the_import_graph_is_a_dag_but_for_the_documented_edge():
    graph = _graph()
    edges = {(a, b) for a, targets in graph.items() for b, lazy in targets
             if (a, b) not in ALLOWED_LAZY_UPWARD}
    for a, b in ALLOWED_LAZY_UPWARD:  # the allowed edge exists, and only lazily
        assert (b, True) in graph[a] and (b, False) not in graph[a]
    order, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"import cycle: {' -> '.join(stack + [node])}"
        state[node] = "open"
        for a, b in sorted(edges):
            if a == node:
                visit(b, stack + [node])
        state[node] = "done"
        order.append(node)
    for node in sorted(graph):
        visit(node, [])
    assert "pool" in order and "_task" in order


def test_worker_side_never_imports_the_parent_side():
    graph = _graph()
    for mod in WORKER_SIDE:
        bad = {b for b, _ in graph.get(mod, set())} & NOT_FOR_WORKERS
        if mod == "kernel":
            bad -= {"execute"}  # the documented lazy edge, never taken in a worker
        assert not bad, f"{mod} (worker side) imports {sorted(bad)}"


def test_lower_layers_never_import_the_facade_or_the_executors():
    graph = _graph()
    for mod, targets in graph.items():
        names = {b for b, _ in targets}
        if mod not in ("__init__", "cli", "verify", "bench"):
            assert "pool" not in names, f"{mod} imports pool"
        if mod not in ("__init__", "cli", "pool", "execute", "dask_backend", "verify", "bench",
                       "_dispatch", "_start", "tasks"):  # the parent's ways of running work
            assert "_executors" not in names, f"{mod} imports _executors"
    engine = {m for m in graph if m not in ("cli", "bench")}
    for mod in engine:
        assert "bench" not in {b for b, _ in graph[mod]}, f"the engine ({mod}) imports bench"


def _lines_without_docstrings(path: pathlib.Path) -> int:
    """Physical lines, less those of docstrings (module, class and function): the budget
    counts code and comments, so documentation is never trimmed to fit it."""
    text = path.read_text()
    doc = 0
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                doc += body[0].end_lineno - body[0].lineno + 1
    return len(text.splitlines()) - doc


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := _lines_without_docstrings(p)) > 500}
    assert not long, f"modules over 500 lines (docstrings not counted): {long}"
