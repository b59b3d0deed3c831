"""The package's layering, read from its source with the standard library's ``ast``.

* No import cycles between the modules of ``discvbr/`` (every import counts, at module level
  or inside a function: a cycle is a design knot even when Python tolerates it at run time).
* No module of ``discvbr/`` imports Qt or ``slicer`` at module level (the package must load
  in CI, in a worker process and in Slicer before anything is installed).
* ``discvbr.registration`` does not import ``discvbr.phantom`` (registration serves real data;
  atlases built from the phantom belong to the phantom side).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "discvbr"
GUI_MODULES = {"qt", "ctk", "slicer", "PythonQt", "vtkITK", "qSlicerBaseQTCorePythonQt"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def _resolve(name: str, module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str, path: Path, *, top_level_only: bool = False) -> set[str]:
    """Absolute names a module imports (``from a import b`` counts ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:  # `if TYPE_CHECKING:` blocks and the like
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", module, path.name == "__init__.py", node)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(name, path):
            # an import of a.b.c also runs a and a.b: count the deepest module of the package named
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            target = ".".join(parts)
            if target and target != name and not name.startswith(target + "."):
                targets.add(target)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_the_import_graph_is_read_from_every_module():
    graph = _graph()
    assert {"discvbr.mrml.volumes", "discvbr.extension.statistics", "discvbr.registration.disc"} <= set(graph)
    # a known edge: the volume glue uses the scene helpers
    assert "discvbr.mrml.scene" in graph["discvbr.mrml.volumes"]


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    assert _cycles(_graph()) == []


def test_no_qt_or_slicer_import_at_module_level():
    offenders = {}
    for name, path in _modules().items():
        gui = {i for i in _imports(name, path, top_level_only=True) if i.split(".")[0] in GUI_MODULES}
        if gui:
            offenders[name] = sorted(gui)
    assert offenders == {}


def test_registration_does_not_import_the_phantom():
    graph = _graph()
    offenders = {name: sorted(t for t in targets if t == "discvbr.phantom" or t.startswith("discvbr.phantom."))
                 for name, targets in graph.items() if name.startswith("discvbr.registration")}
    assert {k: v for k, v in offenders.items() if v} == {}
