"""lucid's modules import only downward: no import cycle between its parts.

The rule, checked on the source with `ast` (every import statement counts, including those inside
functions and under `if TYPE_CHECKING`: an import deferred into a function is still a dependency):

- **Between the parts of `lucid/`.** The nodes are the package root (`lucid/__init__.py`), each
  top-level module (`lucid/tensor.py`, `lucid/tracing.py`, ...) and each subpackage taken whole
  (`lucid/ir/`, `lucid/passes/`, `lucid/codegen/`, ...). An import from one node into another is an
  edge; the graph of edges has no cycle. The root re-exports the public API, so it depends on nearly
  everything: a module below it that imports `lucid` (or `from .. import name`) makes a cycle.
- **Inside `lucid/ir/`.** The nodes are its modules and its subpackage `ops/` taken whole; the same
  rule holds, with the exceptions in `IR_DELEGATIONS` and their reasons.

`importlib.import_module` with a constant name counts as an import (the root loads `lucid.viz` so on
first use). `from package import name` counts as an import of the submodule `package.name` when that module
exists, otherwise of the package. Importing a submodule also runs its package's `__init__`; that is
not counted (each `__init__` is a node of its own, or part of its subpackage's node).
"""
from __future__ import annotations

import ast
import pathlib

import networkx as nx
import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "lucid"

#: Upward imports inside lucid/ir/ that are deliberate, as (importing module, imported module), with
#: their reason.
IR_DELEGATIONS = {
    # `str(graph)`, `graph.verify()`, `graph.save(path)`, `graph.to_networkx()` and `graph.specialize()` are the graph's
    # public methods (SPEC §4), each one line handing the graph to the module that implements it.
    # Those modules read and build graphs, so they sit above graph.py; the import runs when the
    # method is called.
    ("lucid.ir.graph", "lucid.ir.text"): "str(graph)",
    ("lucid.ir.graph", "lucid.ir.verify"): "graph.verify()",
    ("lucid.ir.graph", "lucid.ir.serialize"): "graph.save(path)",
    ("lucid.ir.graph", "lucid.ir.networkx"): "graph.to_networkx()",
    ("lucid.ir.graph", "lucid.ir.specialize"): "graph.specialize(**sizes)",
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(name: str) -> list[str]:
    """The lucid modules and packages `name`'s source imports, anywhere in the file."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if _is_import_module_call(node):       # importlib.import_module(".viz", __name__)
            target = node.args[0].value
            level = len(target) - len(target.lstrip("."))
            found.append(_absolute(package, target[level:] or None, level))
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(package, node.module, node.level)
            found += [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return [m for m in found if m == "lucid" or m.startswith("lucid.")]


def _absolute(package: str, module: str | None, level: int) -> str:
    """The absolute name of `from <level dots><module> import ...` written in `package`."""
    if not level:
        return module
    anchor = package.split(".")[:len(package.split(".")) - level + 1]
    return ".".join(anchor + ([module] if module else []))


def _is_import_module_call(node) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module" and bool(node.args)
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))


def part(name: str, depth: int) -> str:
    """The node holding module `name` when the nodes are packages `depth` levels below the root."""
    return ".".join(name.split(".")[:depth + 1])


def dependency_graph(inside: str, allowed: dict | None = None) -> nx.DiGraph:
    """Edges between the parts of package `inside` (its modules and its subpackages taken whole, and
    `inside` itself for its `__init__`), each labelled with the imports that make it; the imports
    listed in `allowed` are left out."""
    depth = inside.count(".") + 1
    graph = nx.DiGraph()
    for name in MODULES:
        if name != inside and not name.startswith(inside + "."):
            continue
        source = part(name, depth) if name != inside else inside
        for target in imported_modules(name):
            if target != inside and not target.startswith(inside + "."):
                continue
            node = part(target, depth) if target != inside else inside
            if node != source and (name, target) not in (allowed or {}):
                graph.add_edge(source, node)
                graph.edges[source, node].setdefault("imports", []).append(f"{name} imports {target}")
    return graph


def describe(graph: nx.DiGraph, cycle: list) -> str:
    steps = zip(cycle, cycle[1:] + cycle[:1])
    return " -> ".join(cycle + cycle[:1]) + "\n" + "\n".join(
        f"  {a} -> {b}: {', '.join(sorted(set(graph.edges[a, b]['imports'])))}" for a, b in steps)


def assert_acyclic(graph: nx.DiGraph) -> None:
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "import cycles:\n" + "\n".join(describe(graph, c) for c in cycles[:10])


def test_the_resolver_reads_relative_and_absolute_imports():
    """An oracle for `imported_modules` on files whose imports are known."""
    assert "lucid.ir.ops" in imported_modules("lucid.ir.graph")            # from . import ops
    assert "lucid.errors" in imported_modules("lucid.ir.graph")            # from ..errors import ...
    assert "lucid.ir.types" in imported_modules("lucid.ir.ops.registry")   # from ..types import ...
    assert "lucid.nn" in imported_modules("lucid")                         # from . import nn, optim
    assert {"lucid.autograd", "lucid.ir.methods"} <= set(imported_modules("lucid.tensor"))
    assert "lucid.viz" in imported_modules("lucid")                        # importlib.import_module(".viz", ...)


def test_the_parts_of_lucid_import_each_other_without_a_cycle():
    graph = dependency_graph("lucid")
    assert {"lucid.tensor", "lucid.ir", "lucid.passes", "lucid.codegen"} <= set(graph)
    assert_acyclic(graph)


def test_the_modules_of_the_ir_import_each_other_without_a_cycle():
    graph = dependency_graph("lucid.ir", IR_DELEGATIONS)
    assert {"lucid.ir.graph", "lucid.ir.ops", "lucid.ir.types", "lucid.ir.text"} <= set(graph)
    assert_acyclic(graph)


def test_the_ir_does_not_import_the_eager_core_or_the_layers_above():
    """The IR is the bottom layer: it imports the error classes, the archive format and itself only."""
    below = {"lucid.errors", "lucid.archive"}
    for name in MODULES:
        if name.startswith("lucid.ir"):
            outside = {m for m in imported_modules(name) if not m.startswith("lucid.ir")}
            assert outside <= below, f"{name} imports {sorted(outside - below)}"


def test_a_cycle_is_reported_with_the_imports_that_make_it():
    graph = nx.DiGraph()
    graph.add_edge("a", "b", imports=["a.x imports b.y"])
    graph.add_edge("b", "a", imports=["b.y imports a"])
    graph.add_edge("b", "c", imports=["b imports c"])
    with pytest.raises(AssertionError) as info:
        assert_acyclic(graph)
    report = str(info.value)
    assert ("a -> b -> a" in report or "b -> a -> b" in report) and "c" not in report.replace("import cycles", "")
    assert "a -> b: a.x imports b.y" in report and "b -> a: b.y imports a" in report
