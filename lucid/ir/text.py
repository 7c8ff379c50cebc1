"""The text form of a graph (`str(graph)`) and its parser (`parse`), which reads it back to an equal graph.

    graph Decoder {
      input %x: f32[1, 4, 8, 8, 8]
      param %deconv.weight: f32[4, 2, 4, 4, 4]
      param %deconv.bias: f32[2]
      %0: f32[1, 2, 16, 16, 16] = conv_transpose(%x, %deconv.weight, %deconv.bias) {stride=(2, 2, 2), ...} @ deconv: ConvTranspose3d
      %1: f32[] = constant 0.5
      %2: f32[1, 2, 16, 16, 16] = mul(%0, %1)
      update %bn.running_mean = %7
      return %2
    }

One line per input, parameter, node and state update. Node results are numbered in order; inputs and
parameters keep their names. Attributes are Python literals (tuples, numbers, strings, True/False/None,
inf, nan); an attribute holding a graph (a fused node's body) is the string of that graph's text form,
parsed back into a graph when read; constants print every element (float32 in its shortest round-trip form). A node's module
scope follows `@`. The parser accepts only what an operator means: every node's attributes must pass
its operator's declared schemas (`OpDef.attributes`) and its type must equal the shape rule's result,
constants hold literals of their element type and exactly their shape, a state update targets a
parameter of its type. Whatever it is fed, it returns a valid graph or raises GraphError naming the
line.

A graph with symbolic dimensions declares them first (`dim N min=1`, `dim D min=16 max=256`); types
and size attributes then hold them and expressions of them in Python syntax (`f32[N, 8, (D + 1) // 2]`,
`{stops=(N, D - 1)}`; an input's sizes are >= 0 over the dimensions' ranges), and after the nodes come the constraints
on them: `constraint %3: D >= 3` (recorded by node %3's rule: the parser checks that each node's lines
are exactly its rule's) and `constraint: D % 4 == 0` (assumed by the traced code).
"""
from __future__ import annotations

import ast
import math
import re
import warnings

import numpy as np

from ..errors import GraphError, LucidError
from . import symbolic
from .graph import CONSTANT, Graph, Node, Scope, Value
from .ops import get as get_op
from .types import TensorType, as_dtype

_SHORT = {"float32": "f32", "float64": "f64", "int64": "i64", "bool": "bool"}
_LONG = {short: name for name, short in _SHORT.items()}


def format_type(t: TensorType) -> str:
    return f"{_SHORT[t.dtype.name]}[{', '.join(map(str, t.shape))}]"


def format_graph(graph: Graph) -> str:
    names = _value_names(graph)
    lines = [f"graph {graph.name} {{"]
    lines += [f"  dim {s.declaration()}" for s in graph.symbols()]
    lines += [f"  input %{v.name}: {format_type(v.type)}" for v in graph.inputs]
    lines += [f"  param %{v.name}: {format_type(v.type)}" for v in graph.params]
    lines += [f"  {_format_node(node, names)}" for node in graph.nodes]
    lines += [f"  constraint %{names[node.output]}: {c}" for node in graph.nodes for c in node.constraints]
    lines += [f"  constraint: {c}" for c in graph.assumptions]
    lines += [f"  update %{name} = %{names[v]}" for name, v in graph.state_updates.items()]
    results = ", ".join(f"%{names[v]}" for v in graph.outputs)
    if graph.returns_tuple:
        results = f"({results}{',' if len(graph.outputs) == 1 else ''})"
    lines += [f"  return {results}", "}"]
    return "\n".join(lines)


def _value_names(graph: Graph) -> dict:
    names = {v: v.name for v in graph.inputs + graph.params}
    names.update((node.output, str(i)) for i, node in enumerate(graph.nodes))
    return names


def _format_node(node: Node, names: dict) -> str:
    head = f"%{names[node.output]}: {format_type(node.output.type)} = "
    if node.is_constant:
        body = f"{CONSTANT} {_format_data(node.value)}"
    else:
        body = f"{node.op}({', '.join('%' + names[v] for v in node.inputs)})"
        if node.attrs:
            body += " " + format_attributes(node.attrs)
    return head + body + (f" @ {node.scope}" if node.scope else "")


def format_attributes(attrs: dict) -> str:
    """A node's attributes as the text form writes them: `{name=literal, ...}`."""
    return "{" + ", ".join(f"{k}={_format_literal(v)}" for k, v in attrs.items()) + "}"


def _format_literal(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Graph):
        value = format_graph(value)
    if isinstance(value, tuple):
        inner = ", ".join(_format_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_format_literal(v) for v in value) + "]"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, symbolic.Expr):
        return str(value)
    raise GraphError(f"lucid.ir: attribute value {value!r} of type {type(value).__name__} has no text form")


def _format_data(data: np.ndarray) -> str:
    if data.ndim == 0:
        return _format_scalar(data[()])
    return "[" + ", ".join(_format_data(row) for row in data) + "]"


def _format_scalar(x) -> str:
    if isinstance(x, np.floating):
        return str(x)          # the shortest text that reads back to the same value of its own width
    return repr(x.item())


# ---------------------------------------------------------------------------------------------
# Parsing

_VALUE_REF = r"%([A-Za-z0-9_.]+)"
_TYPE = r"(\w+)\[([^\]]*)\]"
_INPUT = re.compile(rf"(input|param) {_VALUE_REF}: {_TYPE}")
_NODE = re.compile(rf"%(\d+): {_TYPE} = (\w+)(.*)")
_UPDATE = re.compile(rf"update {_VALUE_REF} = {_VALUE_REF}")
_DIM = re.compile(r"dim (\w+) min=(\d+)(?: max=(\d+))?")
_CONSTRAINT = re.compile(r"constraint(?: %(\d+))?: (.+)")


def parse(text: str) -> Graph:
    """Read the text form of a graph; GraphError names the line that does not parse or check."""
    if not isinstance(text, str):
        raise GraphError(f"lucid.ir.parse: expected the text of a graph (str), got {type(text).__name__}")
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if (len(lines) < 2 or lines[-1][1] != "}"
            or not (header := re.fullmatch(r"graph ([A-Za-z0-9_.]+) \{", lines[0][1]))):
        raise GraphError("lucid.ir.parse: expected text of the form 'graph NAME {' ... '}' (first and last lines)")
    reader = _Reader(Graph(header.group(1)))
    for number, line in lines[1:-1]:
        try:
            reader.read(line)
        except (LucidError, ValueError, SyntaxError, RecursionError, MemoryError) as exc:
            raise GraphError(f"lucid.ir.parse: line {number} ({line[:100]!r}): {_reason(exc)}") from None
    if not reader.returned:
        raise GraphError("lucid.ir.parse: the graph has no 'return' line")
    reader.check_constraints()
    return reader.graph.verify()


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "the line nests too deeply"
    if isinstance(exc, MemoryError):
        return "the line is too large to read"
    return str(exc)


class _Reader:
    def __init__(self, graph: Graph):
        self.graph, self.values, self.returned = graph, {}, False
        self.dims, self.constraints = {}, {}

    def read(self, line: str) -> None:
        if self.returned:
            raise GraphError("nothing may follow 'return'")
        if m := _DIM.fullmatch(line):
            self._read_dim(m.group(1), int(m.group(2)), None if m.group(3) is None else int(m.group(3)))
        elif m := _INPUT.fullmatch(line):
            kind, name, type_ = m.group(1), m.group(2), _parse_type(m.group(3), m.group(4), self.dims)
            if any(symbolic.bounds(n)[0] < 0 for n in type_.shape):
                raise GraphError(f"{kind} %{name} has a size that is negative for some sizes of its dimensions")
            add = self.graph.add_input if kind == "input" else self.graph.add_param
            self.values[name] = add(name, type_)
        elif m := _NODE.fullmatch(line):
            self._read_node(m.group(1), _parse_type(m.group(2), m.group(3), self.dims), m.group(4), m.group(5))
        elif m := _CONSTRAINT.fullmatch(line):
            self._read_constraint(m.group(1), symbolic.parse_constraint(m.group(2), self.dims))
        elif m := _UPDATE.fullmatch(line):
            self._read_update(m.group(1), self._ref(m.group(2)))
        elif line.startswith("return"):
            self._read_return(line[len("return"):].strip())
        else:
            raise GraphError("expected an input, param, node, update or return line")

    def _read_dim(self, name: str, low: int, high: int | None) -> None:
        if self.values or self.graph.nodes or name in self.dims:
            raise GraphError(f"dimension {name} is declared twice or after an input")
        self.dims[name] = symbolic.Dim(name, low, high)

    def _read_constraint(self, number: str | None, c) -> None:
        if number is None:
            self.graph.assumptions.append(c)
        elif int(number) >= len(self.graph.nodes) or c not in self.graph.nodes[int(number)].constraints:
            raise GraphError(f"node %{number} does not record the constraint {c}")
        else:
            self.constraints.setdefault(int(number), []).append(c)

    def check_constraints(self) -> None:
        """Every constraint a node's rule recorded must be in the text, once."""
        for i, node in enumerate(self.graph.nodes):
            if sorted(map(str, self.constraints.get(i, []))) != sorted(map(str, node.constraints)):
                raise GraphError(f"lucid.ir.parse: node %{i} ({node.op}) records the constraints "
                                 f"{[str(c) for c in node.constraints]}, the text lists "
                                 f"{[str(c) for c in self.constraints.get(i, [])]}")

    def _ref(self, name: str) -> Value:
        if name not in self.values:
            raise GraphError(f"%{name} is used before it is defined")
        return self.values[name]

    def _read_node(self, number: str, type_: TensorType, op: str, rest: str) -> None:
        if number != str(len(self.graph.nodes)):
            raise GraphError(f"expected node number %{len(self.graph.nodes)}, got %{number}")
        body, scope = _split_scope(rest)
        if op == CONSTANT:
            value = self.graph.add_constant(_constant_data(body.strip(), type_), scope)
        else:
            operands, attrs = _split_call(body, self.dims)
            for name in get_op(op).graph_attributes:
                if isinstance(attrs.get(name), str):
                    attrs[name] = parse(attrs[name])
            value = self.graph.add_node(op, [self._ref(name) for name in operands], attrs, scope)
        if value.type != type_:
            raise GraphError(f"the text says {format_type(type_)}, the rule of {op} gives {format_type(value.type)}")
        self.values[number] = value

    def _read_update(self, name: str, value: Value) -> None:
        target = next((p for p in self.graph.params if p.name == name), None)
        if target is None or target.type != value.type:
            raise GraphError(f"an update must target a parameter of its type ({value.type}); "
                             f"%{name} is {'no parameter' if target is None else f'a {target.type} parameter'}")
        if name in self.graph.state_updates:
            raise GraphError(f"%{name} is updated twice")
        self.graph.state_updates[name] = value

    def _read_return(self, text: str) -> None:
        as_tuple = text.startswith("(")
        if as_tuple != text.endswith(")"):
            raise GraphError("unbalanced parentheses after 'return'")
        items = [item.strip() for item in (text[1:-1] if as_tuple else text).split(",")]
        if as_tuple and items[-1] == "" and len(items) > 1:       # "(%0,)" and "(%0, %1,)"
            items.pop()
        if items == [""] and as_tuple:
            items = []
        names = [re.fullmatch(_VALUE_REF, item) for item in items]
        if not all(names) or (not as_tuple and len(names) != 1):
            raise GraphError("expected 'return %value' or 'return (%value, ...)'")
        self.graph.set_outputs([self._ref(m.group(1)) for m in names], as_tuple)
        self.returned = True


_MAX_ELEMENTS = 2 ** 63 - 1


def _parse_type(dtype: str, sizes: str, dims: dict) -> TensorType:
    if dtype not in _LONG:
        raise GraphError(f"unknown element type {dtype!r}; expected one of {sorted(_LONG)}")
    parts = [d.strip() for d in sizes.split(",")]
    if parts == [""]:
        parts = []
    if not all(p.isdigit() or dims and p for p in parts):
        raise GraphError(f"expected a shape of comma-separated sizes, got [{sizes}]")
    shape = tuple(int(p) if p.isdigit() else _symbolic_size(p, dims) for p in parts)
    concrete = [n for n in shape if not symbolic.is_symbolic(n)]
    if math.prod(concrete) > _MAX_ELEMENTS or any(n > _MAX_ELEMENTS for n in concrete):
        raise GraphError(f"shape {list(shape)} has more elements than an int64 counts")
    return TensorType(shape, as_dtype(_LONG[dtype]))


def _symbolic_size(text: str, dims: dict):
    """A size written with the graph's symbolic dimensions (`(D + 1) // 2`)."""
    return symbolic.parse_expression(text, dims)


#: Python types a constant's literal may use for each element kind (bool is not an int here).
_ELEMENT_TYPES = {"b": (bool,), "i": (int,), "f": (int, float)}


def _constant_data(text: str, type_: TensorType) -> np.ndarray:
    """The data of `constant LITERAL`: nested lists of exactly the type's shape holding numbers of
    its element type (floats for f32/f64, ints for i64, True/False for bool) that the type can hold."""
    literal = _literal(text)
    allowed = _ELEMENT_TYPES[type_.dtype.numpy.kind]
    leaves = list(_leaves(literal))
    if not all(type(x) in allowed for x in leaves):
        bad = next(x for x in leaves if type(x) not in allowed)
        raise GraphError(f"a {format_type(type_)} constant holds {bad!r}; expected "
                         f"{' or '.join(t.__name__ for t in allowed)} elements")
    if type_.dtype.numpy.kind == "i" and not all(-2 ** 63 <= x < 2 ** 63 for x in leaves):
        raise GraphError(f"a {format_type(type_)} constant holds a value outside the int64 range")
    with np.errstate(over="ignore"):
        try:
            data = np.array(literal, dtype=type_.dtype.numpy)
        except (ValueError, OverflowError):
            raise GraphError(f"the constant's data is not a regular nested list of shape {type_.shape} "
                             f"of values a {format_type(type_)} holds") from None
    if data.shape != type_.shape:
        raise GraphError(f"the constant's data has shape {data.shape}, its type {format_type(type_)}")
    if type_.dtype.numpy.kind == "f" and np.isinf(data).sum() != sum(math.isinf(x) for x in leaves):
        raise GraphError(f"a {format_type(type_)} constant holds a value too large for its element type")
    return data


def _leaves(literal):
    if isinstance(literal, list):
        for item in literal:
            yield from _leaves(item)
    else:
        yield literal


def _split_scope(rest: str) -> tuple[str, Scope | None]:
    """Split "(operands) {attrs} @ path: Class" into the part before '@' and the scope."""
    cut = _outside_quotes_find(rest, " @ ")
    if cut < 0:
        return rest, None
    scope = rest[cut + 3:].strip()
    path, _, cls = scope.rpartition(": ")
    return rest[:cut], Scope(path, cls)


def _split_call(body: str, dims: dict) -> tuple[list, dict]:
    body = body.strip()
    if not body.startswith("(") or ")" not in body:
        raise GraphError("expected '(operands)' after the operator name")
    close = body.index(")")
    operands = [item.strip() for item in body[1:close].split(",")] if body[1:close].strip() else []
    refs = [re.fullmatch(_VALUE_REF, item) for item in operands]
    if not all(refs):
        raise GraphError(f"expected operands written %name, got {body[:close + 1][:60]!r}")
    operands = [m.group(1) for m in refs]
    attrs_text = body[close + 1:].strip()
    if not attrs_text:
        return operands, {}
    if not (attrs_text.startswith("{") and attrs_text.endswith("}")):
        raise GraphError(f"expected '{{attributes}}' after the operands, got {attrs_text[:40]!r}")
    call = _parse_expression(f"f({attrs_text[1:-1]})")
    if (not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.args
            or any(kw.arg is None for kw in call.keywords)):
        raise GraphError(f"expected attributes written name=literal, got {attrs_text[:60]!r}")
    return operands, {kw.arg: _literal_node(kw.value, dims) for kw in call.keywords}


def _outside_quotes_find(text: str, needle: str) -> int:
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif text.startswith(needle, i):
            return i
    return -1


_NAMED_FLOATS = {"inf": math.inf, "nan": math.nan}


def _literal(text: str):
    return _literal_node(_parse_expression(text))


def _parse_expression(text: str) -> ast.expr:
    """Python's parse of `text` as an expression; what Python only warns about ('1x', an invalid escape
    in a string: a SyntaxWarning or, before Python 3.12, a DeprecationWarning) is a SyntaxError."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SyntaxWarning)
        warnings.simplefilter("error", DeprecationWarning)
        return ast.parse(text, mode="eval").body


def _literal_node(node, dims: dict | None = None):
    """Python literals plus the names inf and nan, and with `dims` (the graph's symbolic dimensions)
    size expressions of them in canonical form; nothing is evaluated."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMED_FLOATS:
        return _NAMED_FLOATS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal_node(node.operand, dims)
        if isinstance(value, (int, float, symbolic.Expr)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Tuple):
        return tuple(_literal_node(e, dims) for e in node.elts)
    if isinstance(node, ast.List):
        return [_literal_node(e, dims) for e in node.elts]
    if dims and isinstance(node, (ast.Name, ast.BinOp, ast.UnaryOp)):
        return _symbolic_size(ast.unparse(node), dims)
    raise GraphError(f"not a literal: {ast.unparse(node)[:60]!r}")
