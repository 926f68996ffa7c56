"""The engine's layers, read from its sources (an AST walk over every import, top-level and
inside functions). One table, LAYERS, places every module: imports go only down it (or
within a layer, without cycles), the worker side is the table's worker layers, and the
README's module map lists the same modules. So the knot that issue 12 undid, and the
sideways spread that issue 25 undid, cannot grow back unnoticed."""
from __future__ import annotations

import ast
import io
import pathlib
import re
import tokenize

import sharedcompute

PACKAGE = pathlib.Path(sharedcompute.__file__).parent
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

# Every module of the engine, by layer, lowest first: (layer, runs in workers?, modules).
# A module imports from its own layer or lower ones; a new module fails
# test_every_module_has_a_place until it is placed here.
LAYERS: list[tuple[str, bool, tuple[str, ...]]] = [
    ("foundations", True, ("errors", "_system")),
    ("memory", True, ("segments", "files", "_views", "shared", "doorbell",
                      "partition")),
    ("code", True, ("_identity", "_compile", "kernel")),
    ("planning", True, ("iterate_result", "plan", "_iterate.plan", "_iterate.wavefront",
                        "_iterate.program", "_iterate.snapshot")),
    ("evaluation", True, ("_evaluate", "_iterate.sweep", "_iterate.stages", "_iterate",
                          "_worker")),
    ("running", False, ("progress", "_fork_server", "_preload", "_executors", "_contracts",
                        "_inline", "_cache", "bind", "futures", "local",
                        "_start", "dask_backend", "_dask_node", "_node_array", "dask_nodes")),
    ("facade", False, ("pool", "verify", "__init__")),
    ("tools", False, ("cli", "__main__", "bench")),
]
PLACE = {m: i for i, (_, _, mods) in enumerate(LAYERS) for m in mods}
WORKER_SIDE = {m for _, worker, mods in LAYERS if worker for m in mods}
# The one upward edge, taken lazily: Kernel.__call__ runs a kernel in process through the
# local backend (as dask's Array.map_overlap imports dask.array.overlap inside the method).
ALLOWED_LAZY_UPWARD = {("kernel", "local")}
# Imports of engine modules inside functions, besides that edge, and why each is lazy.
LAZY = {
    ("pool", "dask_backend"): "the dask extra is optional; dask is slow to import",
}
# Private names of other packages read on purpose, each with its reason (anything else
# that reads another module's `x._name` fails test_no_module_reads_anothers_privates).
FOREIGN_PRIVATES = {
    "_exit": "os._exit: the documented way for a forked child to exit",
    "_children": "multiprocessing.process._children: forget the parent's children after fork",
    "_forkserver": "multiprocessing.forkserver._forkserver: the server to preload and probe",
    "_read_array_header": "numpy.lib.format: the header reader shared by load and open_memmap",
}
CODE_LINES = 400  # code lines per module: docstrings, comments and blank lines not counted


def _modules() -> dict[str, pathlib.Path]:
    """Dotted module name (less 'sharedcompute.') -> path; bench.* counts as one module."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if parts and parts[0] == "kernels":
            continue  # the kernel library: above the engine, imports only its public API
        out[".".join(parts) or "__init__"] = path
    return out


def _unit(name: str) -> str:
    """The table's name of a module: bench's submodules are one unit."""
    return "bench" if name.split(".")[0] == "bench" else name


def _imports(name: str, path: pathlib.Path) -> set[tuple[str, bool]]:
    """(imported engine module, lazy?) for every import of the module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    known = set(_modules())
    top = {id(n) for n in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` blocks run at import: they are top-level
        if isinstance(node, ast.If):
            top |= {id(n) for n in ast.walk(node)}
    found = set()

    def add(target: str, node: ast.AST) -> None:
        while target and target not in known:  # `from .x import f`: the module is x
            target = target.rpartition(".")[0]
        if target and _unit(target) != _unit(name):
            found.add((_unit(target), id(node) not in top))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                if not node.module:
                    for alias in node.names:
                        add(".".join(base + [alias.name]), node)
                    continue
                for alias in node.names:
                    add(".".join(base + [node.module, alias.name]), node)
            elif node.module and node.module.startswith("sharedcompute."):
                for alias in node.names:
                    add(node.module.split(".", 1)[1] + "." + alias.name, node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sharedcompute."):
                    add(alias.name.split(".", 1)[1], node)
    return {(t, lazy) for t, lazy in found if not t.startswith("kernels")}


def _graph() -> dict[str, set[tuple[str, bool]]]:
    graph: dict[str, set[tuple[str, bool]]] = {}
    for name, path in _modules().items():
        graph.setdefault(_unit(name), set()).update(_imports(name, path))
    return graph


def test_every_module_has_a_place():
    units = {_unit(m) for m in _modules()}
    assert not units - set(PLACE), f"modules not in LAYERS (place them): {units - set(PLACE)}"
    assert not set(PLACE) - units, f"LAYERS names modules that are gone: {set(PLACE) - units}"


def test_imports_go_down_the_layers():
    for mod, targets in _graph().items():
        for target, lazy in targets:
            if (mod, target) in ALLOWED_LAZY_UPWARD:
                assert lazy, f"{mod} imports {target} at import time (only lazily allowed)"
                continue
            assert PLACE[target] <= PLACE[mod], (
                f"{mod} ({LAYERS[PLACE[mod]][0]}) imports {target} ({LAYERS[PLACE[target]][0]}),"
                " a higher layer")


def test_the_import_graph_is_a_dag_but_for_the_documented_edge():
    graph = _graph()
    for a, b in ALLOWED_LAZY_UPWARD:  # the allowed edge exists, and only lazily
        assert (b, True) in graph[a] and (b, False) not in graph[a]
    edges = {(a, b) for a, targets in graph.items() for b, _ in targets
             if (a, b) not in ALLOWED_LAZY_UPWARD}
    state: dict[str, str] = {}

    def visit(node: str, stack: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"import cycle: {' -> '.join(stack + [node])}"
        state[node] = "open"
        for a, b in sorted(edges):
            if a == node:
                visit(b, stack + [node])
        state[node] = "done"
    for node in sorted(graph):
        visit(node, [])


def test_lazy_imports_of_the_engine_are_the_documented_ones():
    # A lazy import that loads nothing new only hides an edge from a reader: top-level it.
    for mod, targets in _graph().items():
        if mod in ("cli", "bench", "__main__"):
            continue  # the command line imports what a subcommand needs, when it runs
        for target, lazy in targets:
            if lazy:
                assert (mod, target) in ALLOWED_LAZY_UPWARD | set(LAZY), (
                    f"{mod} imports {target} inside a function: move it to the top, or "
                    "document why in LAZY")


def test_worker_side_never_imports_the_parent_side():
    for mod, targets in _graph().items():
        if mod in WORKER_SIDE:
            bad = {b for b, _ in targets if b not in WORKER_SIDE} - ({"local"} if mod == "kernel" else set())
            assert not bad, f"{mod} (worker side) imports {sorted(bad)}"


def test_the_engine_never_imports_bench():
    for mod, targets in _graph().items():
        if mod not in ("cli", "bench"):
            assert "bench" not in {b for b, _ in targets}, f"the engine ({mod}) imports bench"


def test_the_readme_maps_every_module():
    text = README.read_text()
    block = text[text.index("\n## How it works"):]
    block = block[block.index("```"):block.index("```", block.index("```") + 3)]
    named = set(re.findall(r"(?m)^\s+([\w./]+?)(?:\.py|/)\s", block))
    named = {n.replace("/", ".").removesuffix(".") for n in named}
    expected = {m for m in PLACE if m not in ("__init__", "__main__")}
    assert not expected - named, f"README's module map leaves out {sorted(expected - named)}"


def code_lines(path: pathlib.Path) -> int:
    """Lines holding code: not docstrings (module, class and function), not comments, not
    blank; so documentation is never trimmed to fit the budget."""
    text = path.read_text()
    doc: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                doc.update(range(first.lineno, first.end_lineno + 1))
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in skip:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in doc)
    return len(lines)


def test_code_lines_are_counted_without_docs(tmp_path):
    # The measure itself: docstrings, comments and blank lines are not code.
    f = tmp_path / "m.py"
    f.write_text('"""Doc\n\nstring."""\n# a comment\n\ndef f(x):\n    """Doc."""\n'
                 '    return (x +\n            1)  # why\n')
    assert code_lines(f) == 3


def test_no_module_is_over_the_code_line_budget():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := code_lines(p)) > CODE_LINES}
    assert not long, f"modules over {CODE_LINES} code lines: {long}"


def _own_private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, attributes it assigns,
    class-level names and __slots__ entries."""
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            names.add(n.attr)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            names.add(n.value)  # __slots__ entries, namedtuple fields
    return {n for n in names if n.startswith("_")}


def private_reads(path: pathlib.Path) -> list[str]:
    """`x._name` where the module itself defines no `_name`: another module's private."""
    tree = ast.parse(path.read_text())
    own = _own_private_names(tree)
    return [f"{path.name}:{n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr.startswith("_")
            and not (n.attr.startswith("__") and n.attr.endswith("__"))
            and n.attr not in own and n.attr not in FOREIGN_PRIVATES]


def test_private_reads_are_found(tmp_path):
    # The measure itself: a read of another object's private is found, one's own is not.
    f = tmp_path / "m.py"
    f.write_text("class A:\n    def __init__(self):\n        self._mine = 1\n"
                 "    def f(self, other):\n        return self._mine + other._theirs\n")
    assert private_reads(f) == ["m.py:5: other._theirs"]


def test_no_module_reads_anothers_privates():
    found = [r for p in sorted(PACKAGE.rglob("*.py")) if "kernels" not in p.parts
             for r in private_reads(p)]
    assert not found, "reads of another module's private names:\n" + "\n".join(found)


def test_every_backend_keeps_the_backend_contract():
    """The Pool calls its backend without asking which (no getattr probes): each backend
    class has every method the Backend protocol declares, with the same parameters."""
    import inspect

    from sharedcompute.dask_backend import DaskBackend
    from sharedcompute.dask_nodes import NodesBackend
    from sharedcompute._contracts import Backend
    from sharedcompute.local import LocalBackend
    methods = {n for n, v in vars(Backend).items() if callable(v) and not n.startswith("_")}
    assert {"map", "reduce", "iterate", "submit", "call_bound", "warmup"} <= methods
    for cls in (LocalBackend, DaskBackend, NodesBackend):
        for name in sorted(methods):
            assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}"
            want = list(inspect.signature(getattr(Backend, name)).parameters)
            got = inspect.signature(getattr(cls, name)).parameters
            assert list(got)[:len(want)] == want, (
                f"{cls.__name__}.{name}{list(got)} is not the protocol's {want}")
            extra = [p for p in list(got)[len(want):] if got[p].default is inspect.Parameter.empty]
            assert not extra, f"{cls.__name__}.{name} needs more than the protocol: {extra}"


def test_every_executor_keeps_the_executor_contract():
    """The backend calls its executor without asking which: both executors have every
    member the Executor protocol declares, methods with the same parameters."""
    import inspect

    from sharedcompute._contracts import Executor
    from sharedcompute._executors import ProcessExecutor
    from sharedcompute._inline import InlineExecutor
    methods = {n for n, v in vars(Executor).items() if callable(v) and not n.startswith("_")}
    fields = set(Executor.__annotations__)
    assert {"run", "run_dynamic", "warmup", "stop"} <= methods and "rings" in fields
    for cls in (ProcessExecutor, InlineExecutor):
        ex = cls(2, "spawn") if cls is ProcessExecutor else cls(2)
        for name in sorted(fields):
            assert hasattr(ex, name), f"{cls.__name__} lacks {name}"
        for name in sorted(methods):
            assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}"
            want = list(inspect.signature(getattr(Executor, name)).parameters)
            got = list(inspect.signature(getattr(cls, name)).parameters)
            assert got[:len(want)] == want, f"{cls.__name__}.{name}{got} is not {want}"
