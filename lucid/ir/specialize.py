"""`graph.specialize(N=2, D=32)`: the concrete graph of a graph with symbolic sizes, at given sizes.

- every symbolic dimension of the graph gets a size (an unknown or missing name is a ShapeError);
- each size lies within its dimension's min and max, and satisfies every constraint the graph
  records; a violation is a ShapeError naming the dimension, its value, the constraint and the node
  (op and module) that needed it, checked before any rule runs again;
- the result has the input types and the size-valued attributes (reshape shapes, slice bounds...)
  evaluated, every node's type and constraints computed afresh by its rule (so it verifies), and the
  same parameters, bindings, outputs and state updates.
`check_sizes` is that check alone (compiled code for every size runs it on each call's sizes),
`sizes_of_inputs` reads the sizes from the arrays a graph is run with (`lucid.ir.run`, compiled
code), and `require_concrete` is the refusal of the stages that need concrete sizes (export).
"""
from __future__ import annotations

from ..errors import CompileError, ShapeError
from . import symbolic
from .graph import CONSTANT, Graph
from .types import TensorType


def specialize(graph: Graph, sizes: dict) -> Graph:
    return _evaluated(graph, check_sizes(graph, sizes))


def check_sizes(graph: Graph, sizes: dict, symbols: tuple | None = None) -> dict:
    """`sizes` (name -> int) after checking that they name exactly the graph's symbolic dimensions
    (`symbols`: `graph.symbols()`, which a caller checking many sizes may keep), lie in their ranges
    and meet every constraint (else a ShapeError naming the dimension, its value, the constraint and
    what needed it). Compiled code for every size checks each call's sizes here."""
    sizes = _checked_sizes(graph, graph.symbols() if symbols is None else symbols, sizes)
    for c, node in graph.constraints:
        if not c.holds(sizes):
            shown = ", ".join(f"{s.name} = {sizes[s.name]}" for s in sorted(c.symbols, key=lambda s: s.name))
            raise ShapeError(f"graph {graph.name}: {shown} violates the constraint {c}, required by {_origin(node)}")
    return sizes


def _checked_sizes(graph: Graph, symbols: tuple, sizes: dict) -> dict:
    names = {s.name for s in symbols}
    unknown, missing = sorted(set(sizes) - names), sorted(names - set(sizes))
    if unknown or missing:
        raise ShapeError(f"graph {graph.name}: its symbolic dimensions are {', '.join(sorted(names)) or 'none'}; "
                         + "; ".join([f"unknown {', '.join(unknown)}"] * bool(unknown)
                                     + [f"no size for {', '.join(missing)}"] * bool(missing)))
    for s in symbols:
        value = sizes[s.name]
        if not symbolic.is_int(value) or value < s.min or (s.max is not None and value > s.max):
            bound = f">= {s.min}" + ("" if s.max is None else f" and <= {s.max}")
            raise ShapeError(f"graph {graph.name}: dimension {s.name} = {value!r} is outside its range (an int {bound})")
    return {name: int(value) for name, value in sizes.items()}


def _origin(node) -> str:
    if node is None:
        return "the traced code"
    return f"{node.op}" + (f" at {node.scope}" if node.scope else "")


def _evaluated(graph: Graph, sizes: dict) -> Graph:
    new = Graph(graph.name)
    mapping = {}
    for v in graph.inputs:
        mapping[v] = new.add_input(v.name, _type(v.type, sizes))
    for v in graph.params:
        mapping[v] = new.add_param(v.name, _type(v.type, sizes))
    for node in graph.nodes:
        if node.op == CONSTANT:
            mapping[node.output] = new.add_constant(node.value, node.scope)
        else:
            attrs = {k: _attribute(a, sizes) for k, a in node.attrs.items()}
            mapping[node.output] = new.add_node(node.op, [mapping[v] for v in node.inputs], attrs, node.scope)
    new.set_outputs((mapping[v] for v in graph.outputs), graph.returns_tuple)
    new.state_updates = {k: mapping[v] for k, v in graph.state_updates.items()}
    new.bindings = dict(graph.bindings)
    return new.verify()


def _type(t: TensorType, sizes: dict) -> TensorType:
    return TensorType(symbolic.evaluate(t.shape, sizes), t.dtype)


def _attribute(value, sizes: dict):
    if isinstance(value, tuple):
        return tuple(_attribute(v, sizes) for v in value)
    if isinstance(value, Graph):
        return _evaluated(value, {s.name: sizes[s.name] for s in value.symbols()})
    return symbolic.evaluate(value, sizes)


def sizes_of_inputs(graph: Graph, shapes: list, owner: str) -> dict:
    """The size of each symbolic dimension that appears alone in an input's type, read from the inputs'
    actual `shapes`; a ShapeError when a rank differs or one dimension is given two sizes."""
    sizes, seen = {}, {}
    for v, shape in zip(graph.inputs, shapes):
        if len(shape) != len(v.shape):
            raise ShapeError(f"{owner}: input {v.name!r} must have shape {v.shape}, got {tuple(shape)}")
        for axis, (declared, actual) in enumerate(zip(v.shape, shape)):
            symbol = declared.symbol if isinstance(declared, symbolic.Expr) else None
            if symbol is None:
                continue
            if symbol.name in sizes and sizes[symbol.name] != actual:
                raise ShapeError(f"{owner}: dimension {symbol.name} is {sizes[symbol.name]} in {seen[symbol.name]} "
                                 f"but {actual} in input {v.name!r} (axis {axis})")
            sizes[symbol.name], seen[symbol.name] = int(actual), f"input {v.name!r} (axis {axis})"
    return sizes


def require_concrete(graph: Graph, stage: str) -> None:
    """CompileError unless every type of the graph is concrete."""
    values = graph.inputs + graph.params + [node.output for node in graph.nodes]
    symbols = sorted({s.name for v in values for s in symbolic.free_symbols(v.shape)})
    if symbols:
        sizes = ", ".join(f"{name}=..." for name in symbols)
        raise CompileError(f"{stage}: graph {graph.name} has symbolic dimensions ({', '.join(symbols)}); compile a "
                           f"graph specialised to sizes (graph.specialize({sizes})) for this stage")
