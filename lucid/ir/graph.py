"""The graph IR: typed values, nodes, graphs, and the builder that records operator calls into a graph.

A `Graph` holds nodes in topological order; each node applies one registered operator (or is a
`constant`) and defines one `Value`, which carries a static type (shape and dtype). A graph has:
- inputs: the traced function's arguments, named after them;
- params: a module's parameters and buffers, named by their state-dict path (`down.0.weight`). They
  are graph inputs of their own kind, not constants: `graph.bindings` maps each name to the value it
  reads by default, anything `np.asarray` takes. For a traced module that is the live parameter
  tensor, so the graph follows the module's weights as they are trained (`lucid.compile` relies on
  it) and `graph.save` writes their current values; a graph can also be run with other weights.
  Bindings are data: the IR only reads them as arrays (autodiff also reads `requires_grad` where a
  binding has one), and a graph holds no module (the tracer initialises lazy modules itself);
- outputs (a single value or a tuple), and `state_updates`: new values for buffers (BatchNorm's
  running statistics in training mode), written back when the graph runs.

Types may hold symbolic sizes (`lucid.ir.symbolic`: `f32[N, 1, D, 64, 64]`). Whatever a shape rule
had to assume about them is recorded on its node (`node.constraints`, e.g. `D >= 3`), and what the
traced Python code assumed (comparisons outside any rule) on the graph (`graph.assumptions`);
`graph.constraints` lists both, each with the node that required it (None for the code's).
`graph.specialize(N=2, D=32)` is the concrete graph at those sizes, once they satisfy all of them.

Values are tensor-like (`TensorMethods`): calling an operator on graph values while a `Builder` is
active (`building(...)`) appends a node instead of computing. The tracer and the autodiff pass both
build graphs this way, through the same operator functions and gradient rules eager code uses.
"""
from __future__ import annotations

import itertools
import re
import threading
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from ..errors import GraphError, LucidError, TraceError
from . import ops, symbolic
from .methods import TensorMethods, in_place_result
from .types import DType, TensorType, as_dtype

CONSTANT = "constant"
_NAME = re.compile(r"[A-Za-z0-9_.]+")


class Scope(NamedTuple):
    """Where a node came from: the module path inside the traced module ('' for the root) and the
    module's class name."""

    path: str
    cls: str

    def __str__(self) -> str:
        return f"{self.path}: {self.cls}" if self.path else self.cls


class Value(TensorMethods):
    """A typed value of a graph: an input, a parameter or a node's output. It has no data."""

    _lucid_priority = 10

    def __init__(self, graph: "Graph", type_: TensorType, name: str | None = None, node: "Node | None" = None):
        self.graph, self.type, self.name, self.node = graph, type_, name, node

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    def __repr__(self) -> str:
        where = f"%{self.name}" if self.name else f"{self.node.op}" + (f" at {self.node.scope}" if self.node.scope else "")
        return f"<lucid.ir.Value {where}: {self.type}>"

    @classmethod
    def _lucid_apply(cls, opdef, inputs: tuple, attrs: dict) -> "Value":
        return current_builder().apply(opdef, inputs, attrs)

    @classmethod
    def _lucid_constant(cls, array: np.ndarray) -> "Value":
        return current_builder().constant(array)

    def _assign_in_place(self, method: str, compute):
        """PyTorch's in-place semantics on a graph value: this Python object becomes the result, so
        every name bound to it reads the new value, while the nodes that read it before keep the old
        value (moved to a new object). Values sliced or reshaped from it earlier keep the old value,
        as eager tensors' views do (see `lucid.Tensor._assign_in_place`)."""
        count = len(self.graph.nodes)
        result = in_place_result(method, self, compute(self))
        if result.node is None or result.node not in self.graph.nodes[count:]:
            result = ops.cast(result, result.dtype)          # a node of its own for this object to become
        self.graph.replace_reads(self, Value(self.graph, self.type, self.name, self.node))
        self.type, self.name, self.node = result.type, None, result.node
        self.node.output = self
        return self

    def _no_data(self, what: str):
        raise TraceError(f"{what}: a traced value ({self.type}) has no data while tracing; Python control flow "
                         "and conversions that depend on tensor values cannot be traced")

    def item(self):
        self._no_data("item()")

    def tolist(self):
        self._no_data("tolist()")

    def numpy(self):
        self._no_data("numpy()")

    @property
    def data(self):
        self._no_data(".data")

    def __setitem__(self, key, value):
        raise TraceError(f"item assignment: a traced value ({self.type}) cannot be written into while tracing; "
                         "build the new value out of place (lucid.where, lucid.cat, padding)")

    def __bool__(self):
        self._no_data("bool()")

    def __float__(self):
        self._no_data("float()")

    def __int__(self):
        self._no_data("int()")

    def __index__(self):
        self._no_data("index")

    def __array__(self, dtype=None, copy=None):
        self._no_data("conversion to a NumPy array")


class Node:
    """One operator application: `op` (a registered name, or CONSTANT with `value` holding the data),
    input values, attributes (plain Python values), the module scope it came from, its output, and
    the constraints on symbolic sizes its shape rule recorded (`lucid.ir.symbolic.Constraint`s)."""

    __slots__ = ("op", "inputs", "attrs", "scope", "value", "output", "constraints")

    def __init__(self, op: str, inputs: tuple, attrs: dict, scope: Scope | None = None, value=None):
        self.op, self.inputs, self.attrs, self.scope, self.value = op, tuple(inputs), dict(attrs), scope, value
        self.output: Value | None = None
        self.constraints: tuple = ()

    @property
    def opdef(self):
        return ops.get(self.op)

    @property
    def is_constant(self) -> bool:
        return self.op == CONSTANT

    def __repr__(self) -> str:
        return f"<lucid.ir.Node {self.op}" + (f" at {self.scope}>" if self.scope else ">")


def infer_type(node: Node) -> TensorType:
    """The node's output type (see `infer_type_and_constraints`)."""
    return infer_type_and_constraints(node)[0]


def infer_type_and_constraints(node: Node) -> tuple:
    """The node's output type and the constraints on symbolic sizes its rule recorded. The type from its operator's shape rule, once its attributes pass the operator's
    declared schemas (`OpDef.attributes`) and its input count the rule's signature. A failure is re-raised (same class)
    naming the node's module (class and path, as module errors do), the op and its input types, then
    the rule's own message; the exception keeps the refused node (`failing_node`, no output yet) and
    the rule's message alone (`rule_message`), which the visualiser shows."""
    if node.is_constant:
        return TensorType(node.value.shape, node.value.dtype), ()
    try:
        opdef = node.opdef
        key = _inference_key(opdef, node)
        known = _INFERRED.get(key) if key is not None else None
        if known is not None:
            return known
        opdef.check_attributes(node.attrs)
        opdef.check_input_count(len(node.inputs))
        with symbolic.recording() as constraints:
            type_ = opdef.infer(node.attrs, *(v.type for v in node.inputs))
        if key is not None:
            _remember(key, (type_, tuple(constraints)))
        return type_, tuple(constraints)
    except LucidError as exc:
        where = "" if not node.scope else f"{node.scope.cls} '{node.scope.path}': " if node.scope.path else f"{node.scope.cls}: "
        types = ", ".join(str(v.type) for v in node.inputs)
        if getattr(exc, "failing_node", None) is None:
            exc.failing_node, exc.rule_message = node, str(exc.args[0]) if exc.args else ""
        exc.args = (f"{where}{node.op}({types}): {exc.args[0] if exc.args else ''}{_at_minimum(node)}",) + exc.args[1:]
        exc._lucid_layer_named = True
        raise


#: (operator, attributes, input types) -> (output type, constraints) of rules that passed: a rule is a
#: function of these alone, and each pass's copy of a graph, and each verification, asks again.
_INFERRED: dict = {}
INFERRED_LIMIT = 1 << 16


def _inference_key(opdef, node: Node) -> tuple | None:
    """What a node's rule reads, as a dict key (values keyed with their types, so 1, 1.0 and True
    differ); None when an attribute is not a plain value (a fused body), whose node is not remembered."""
    try:
        attributes = tuple(sorted((name, _plain_key(value)) for name, value in node.attrs.items()))
    except TypeError:
        return None
    return opdef, attributes, tuple(v.type for v in node.inputs)


def _plain_key(value):
    if isinstance(value, (tuple, list)):
        return type(value), tuple(_plain_key(v) for v in value)
    if isinstance(value, symbolic.Expr):
        return symbolic.Expr, value.terms
    if value is None or isinstance(value, (bool, int, float, str, symbolic.Dim, DType)):
        return type(value), value
    raise TypeError(f"{type(value).__name__} is not a plain attribute value")


def _remember(key: tuple, inferred: tuple) -> None:
    if len(_INFERRED) >= INFERRED_LIMIT:
        _INFERRED.clear()
    _INFERRED[key] = inferred


def _at_minimum(node: Node) -> str:
    """The note a refusal of symbolic sizes gets: rules decide them at their minimum values."""
    dims = sorted(symbolic.free_symbols(tuple(v.shape for v in node.inputs)), key=lambda s: s.name)
    if not dims:
        return ""
    return (f" (shape rules decide symbolic sizes at their minimum, {', '.join(f'{s.name} = {s.min}' for s in dims)}: "
            "if the model needs larger sizes, declare them, e.g. lucid.dim(name, min=...))")


class Graph:
    """A static dataflow graph; see the module docstring. `str(graph)` is its text form."""

    __hash__ = None      # mutable, and == compares structure

    def __init__(self, name: str = "graph"):
        self.name = _checked_name(name, "graph name")
        self.inputs: list[Value] = []
        self.params: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self.returns_tuple = False
        self.state_updates: dict[str, Value] = {}
        self.bindings: dict[str, object] = {}
        self.assumptions: list = []

    # ------------------------------------------------------------------ building
    def add_input(self, name: str, type_: TensorType) -> Value:
        value = Value(self, type_, self._new_name(name))
        self.inputs.append(value)
        return value

    def add_param(self, name: str, type_: TensorType, binding=None) -> Value:
        value = Value(self, type_, self._new_name(name))
        self.params.append(value)
        if binding is not None:
            self.bindings[name] = binding
        return value

    def add_node(self, op: str, inputs, attrs: dict, scope: Scope | None = None) -> Value:
        """Append a node applying `op`; its output type comes from the op's shape rule."""
        node = self.new_node(op, inputs, attrs, scope)
        self.nodes.append(node)
        return node.output

    def add_constant(self, array, scope: Scope | None = None) -> Value:
        node = self.new_constant(array, scope)
        self.nodes.append(node)
        return node.output

    def new_node(self, op: str, inputs, attrs: dict, scope: Scope | None = None) -> Node:
        """A node of this graph typed by its shape rule, not yet placed in the node list."""
        node = Node(op, inputs, attrs, scope)
        type_, node.constraints = infer_type_and_constraints(node)
        node.output = Value(self, type_, node=node)
        return node

    def new_constant(self, array, scope: Scope | None = None) -> Node:
        """A constant node holding a read-only copy of `array`, not yet placed in the node list."""
        data = np.array(array, dtype=as_dtype(np.asarray(array).dtype).numpy)
        data.flags.writeable = False
        node = Node(CONSTANT, (), {}, scope, data)
        node.output = Value(self, TensorType(data.shape, data.dtype), node=node)
        return node

    def _append(self, node: Node, type_: TensorType) -> Value:
        node.output = Value(self, type_, node=node)
        self.nodes.append(node)
        return node.output

    def set_outputs(self, values, as_tuple: bool) -> None:
        self.outputs, self.returns_tuple = list(values), bool(as_tuple)

    def _new_name(self, name: str) -> str:
        name = _checked_name(name, "value name")
        if name.isdigit():
            raise GraphError(f"graph {self.name}: value name {name!r} is all digits; node results use those")
        if any(v.name == name for v in self.inputs + self.params):
            raise GraphError(f"graph {self.name}: duplicate input or parameter name {name!r}")
        return name

    def fresh_name(self, name: str) -> str:
        """`name`, or `name_1`, `name_2`... : the first not yet used by an input or parameter."""
        taken = {v.name for v in self.inputs + self.params}
        candidates = itertools.chain([name], (f"{name}_{i}" for i in itertools.count(1)))
        return next(n for n in candidates if n not in taken)

    # ------------------------------------------------------------------ queries
    def value(self, name: str) -> Value:
        """The input or parameter called `name`."""
        for v in self.inputs + self.params:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.inputs + self.params)
        raise GraphError(f"graph {self.name}: no input or parameter named {name!r}; it has {known}")

    def symbols(self) -> tuple:
        """The symbolic dimensions of the graph's input and parameter types, in order of appearance."""
        found = {}
        for v in self.inputs + self.params:
            for size in v.shape:
                for s in sorted(symbolic.free_symbols(size), key=lambda s: s.name):
                    found.setdefault(s.name, s)
        return tuple(found.values())

    @property
    def constraints(self) -> tuple:
        """Every constraint on the symbolic sizes, as (constraint, node): the nodes' own, in node order,
        then the traced code's assumptions (node None)."""
        return (tuple((c, node) for node in self.nodes for c in node.constraints)
                + tuple((c, None) for c in self.assumptions))

    def users(self) -> dict[Value, list[Node]]:
        """Each value's consuming nodes (outputs and state updates are not nodes)."""
        uses: dict[Value, list[Node]] = {}
        for node in self.nodes:
            for v in node.inputs:
                uses.setdefault(v, []).append(node)
        return uses

    def live_values(self) -> set:
        """Values that outputs or state updates depend on."""
        live = set(self.outputs) | set(self.state_updates.values())
        for node in reversed(self.nodes):
            if node.output in live:
                live.update(node.inputs)
        return live

    # ------------------------------------------------------------------ rewriting (used by passes)
    def copy(self, reinfer: bool = False) -> "Graph":
        """A structural copy with fresh values; the bound tensors are shared. With
        `reinfer`, every node's type is computed again by its shape rule from the inputs' types.

        There is deliberately no way to change the input types: traced code bakes shape-derived
        numbers into attributes and constants (a variance's element count, a reshape's sizes), so a
        graph for other shapes must be traced again, or traced once with symbolic dimensions and
        specialised (`specialize`), whose attributes hold the sizes as expressions."""
        new = Graph(self.name)
        mapping = {}
        for v in self.inputs:
            mapping[v] = new.add_input(v.name, v.type)
        for v in self.params:
            mapping[v] = new.add_param(v.name, v.type)
        for node in self.nodes:
            copy = Node(node.op, (mapping[v] for v in node.inputs), node.attrs, node.scope, node.value)
            type_, copy.constraints = infer_type_and_constraints(copy) if reinfer else (node.output.type, node.constraints)
            mapping[node.output] = new._append(copy, type_)
        new.set_outputs((mapping[v] for v in self.outputs), self.returns_tuple)
        new.state_updates = {k: mapping[v] for k, v in self.state_updates.items()}
        new.bindings = dict(self.bindings)
        new.assumptions = list(self.assumptions)
        return new

    def rebuild(self, nodes: list, substitute: dict) -> None:
        """Replace the node list by `nodes` and make every reader of a key of `substitute` (a value ->
        value map) read its image instead (what rewriting passes finish with)."""
        for old, new in substitute.items():
            if old.type != new.type:
                raise GraphError(f"graph {self.name}: cannot replace a {old.type} value by a {new.type} value")
        self.nodes = list(nodes)
        for node in self.nodes:
            node.inputs = tuple(substitute.get(v, v) for v in node.inputs)
        self.outputs = [substitute.get(v, v) for v in self.outputs]
        self.state_updates = {k: substitute.get(v, v) for k, v in self.state_updates.items()}

    def replace_reads(self, value: Value, replacement: Value) -> None:
        """Make `replacement` stand for `value` everywhere in the graph (as an input, a parameter, a
        node's output and input, an output, a state update); `value` itself is left unattached."""
        if value.node is not None:
            value.node.output = replacement
        swap = {value: replacement}
        self.inputs = [swap.get(v, v) for v in self.inputs]
        self.params = [swap.get(v, v) for v in self.params]
        self.rebuild(self.nodes, swap)

    # ------------------------------------------------------------------ other forms
    def __str__(self) -> str:
        from .text import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return (f"<lucid.ir.Graph {self.name}: {len(self.inputs)} inputs, {len(self.params)} params, "
                f"{len(self.nodes)} nodes, {len(self.outputs)} outputs>")

    def __eq__(self, other) -> bool:
        return isinstance(other, Graph) and str(self) == str(other)

    def verify(self) -> "Graph":
        from .verify import verify

        verify(self)
        return self

    def save(self, path) -> None:
        from .serialize import save

        save(self, path)

    def specialize(self, **sizes) -> "Graph":
        from .specialize import specialize

        return specialize(self, sizes)

    def to_networkx(self):
        from .networkx import to_networkx

        return to_networkx(self)


def _checked_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise GraphError(f"lucid.ir: {what} {name!r} must be made of letters, digits, '_' and '.'")
    return name


# ---------------------------------------------------------------------------------------------
# Building: operator calls on graph values append nodes to the active builder's graph


class Builder:
    """Records operator calls into `graph`, giving new nodes `scope`. The tracer extends it to bring
    in eager tensors (parameters, constants) and module scopes."""

    def __init__(self, graph: Graph, scope: Scope | None = None):
        self.graph, self.scope = graph, scope

    def current_scope(self) -> Scope | None:
        return self.scope

    def import_value(self, value) -> Value:
        if isinstance(value, Value):
            if value.graph is not self.graph:
                raise GraphError(f"graph {self.graph.name}: a value of graph {value.graph.name} was used in it")
            return value
        raise TraceError(f"graph {self.graph.name}: cannot use a {type(value).__name__} while building a graph")

    def apply(self, opdef, inputs: tuple, attrs: dict) -> Value:
        values = [self.import_value(v) for v in inputs]
        return self.graph.add_node(opdef.name, values, attrs, self.current_scope())

    def constant(self, array: np.ndarray) -> Value:
        return self.graph.add_constant(array, self.current_scope())

    def defer_initialisation(self, module) -> bool:
        """Whether a lazy module materialised now should leave drawing its parameter values to this
        builder, which then draws them itself (only the tracer says yes: at the end of the trace)."""
        return False

    def record_update(self, target, value: Value) -> None:
        raise TraceError(f"graph {self.graph.name}: an in-place state update cannot be recorded here")

    def assign_in_place(self, target, value: Value) -> None:
        """An in-place change of eager tensor `target` while building: later reads of it read `value`."""
        raise TraceError(f"graph {self.graph.name}: an eager tensor cannot be changed in place here")


_builders = threading.local()


@contextmanager
def building(builder: Builder):
    """Make `builder` the active one: operator calls go to its graph until the block ends."""
    stack = _builders.__dict__.setdefault("stack", [])
    stack.append(builder)
    try:
        with ops.registry.recording(Value), symbolic.recording(builder.graph.assumptions):
            yield builder
    finally:
        stack.pop()


def current_builder() -> Builder:
    stack = getattr(_builders, "stack", None)
    if not stack:
        raise TraceError("lucid.ir: graph values can only be used while a graph is being built "
                         "(inside lucid.trace or a pass); this one outlived its trace")
    return stack[-1]


def active_builder() -> Builder | None:
    """The active builder, or None when operators run eagerly."""
    stack = getattr(_builders, "stack", None)
    return stack[-1] if stack else None
