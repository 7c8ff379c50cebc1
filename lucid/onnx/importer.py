"""`lucid.onnx.load`: an ONNX model as a `lucid.ir.Graph`.

The graph is built as tracing builds one: each ONNX node's converter (`converters.CONVERTERS`, the
one table of supported operators) calls lucid's operator functions on graph values inside a
`Builder`, so every node is typed by its operator's shape rule as it is added. Before any node is
converted the whole model is checked: every operator is supported (one error lists all the others),
every node input is defined, and the nodes have an order without a cycle.

Values are of two kinds while importing: graph values, and NumPy arrays, which are what the
initialisers, `Constant` nodes and the shape arithmetic exporters emit (`Shape`, `Gather`, `Concat`,
`Unsqueeze`, `Cast`...) are. A node whose inputs are all arrays is folded with NumPy when its
converter has a fold; inputs a converter needs as numbers (a reshape's shape, slice bounds, pads,
scales) must be arrays, else the error names the node. Arrays met by graph operators become
parameters (an initialiser, named by its sanitised ONNX name and bound to its array) or constants.
`graph.onnx_names` maps each input and parameter name to its ONNX name.
"""
from __future__ import annotations

import re
from collections import defaultdict, deque

import numpy as np

from ..errors import LucidError, OnnxError
from ..ir.graph import Builder, Graph, Scope, Value, building
from ..ir.types import TensorType
from . import reader  # first: without onnx, its ImportError says how to install it
from . import norm_patterns
from .converters import CONVERTERS, OnnxNode


def load(path_or_bytes, input_shapes=None) -> Graph:
    """The graph of an ONNX model (a file path or its bytes), opset 13 or newer. `input_shapes` (a dict
    input name -> shape, or one shape per input in order) fixes dimensions the file leaves symbolic.
    Every refusal is an `OnnxError` (a ValueError) naming the file and, where there is one, the node."""
    model, source = reader.parse(path_or_bytes)
    opset = reader.default_opset(model, source)
    onnx_graph = model.graph
    _check_operators(onnx_graph, source)
    initialisers = {t.name: t for t in onnx_graph.initializer}
    inputs = reader.input_types(onnx_graph, set(initialisers), input_shapes, source)
    order = _node_order(onnx_graph, {name for name, _ in inputs} | set(initialisers), source)
    used = {name for n in onnx_graph.node for name in n.input} | {v.name for v in onnx_graph.output}
    importer = _Importer(_graph_name(onnx_graph.name), source, used,
                         {name: n for n in onnx_graph.node for name in n.output if name})
    for name, type_ in inputs:
        importer.env[name] = importer.graph.add_input(importer.ir_name(name), type_)
    for name, tensor in initialisers.items():
        importer.add_initialiser(name, reader.tensor_array(tensor, source))
    for proto in order:
        importer.convert(OnnxNode(proto, opset, source))
    importer.set_outputs([v.name for v in onnx_graph.output])
    from ..passes import dead_code, shape_inference

    graph = dead_code.run(shape_inference.run(importer.graph))      # drops the chains norms were fused from
    graph.onnx_names = importer.onnx_names
    return graph


def _check_operators(onnx_graph, source) -> None:
    """One error naming every operator type of the model that lucid cannot import."""
    unsupported = sorted({_op_name(n) for n in onnx_graph.node
                          if n.domain not in ("", "ai.onnx") or n.op_type not in CONVERTERS})
    if unsupported:
        raise source.error(f"unsupported ONNX operators: {', '.join(unsupported)} "
                           f"(lucid imports {', '.join(sorted(CONVERTERS))})")


def _op_name(node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _node_order(onnx_graph, defined: set, source) -> list:
    """The nodes in an order where each reads only values defined before it (the file's order when it
    is one); an input nothing defines, or a cycle, is an error naming the node."""
    producers = {}
    for node in onnx_graph.node:
        for name in node.output:
            if name and (name in producers or name in defined):
                raise source.error(f"node {node.name!r} ({node.op_type}) defines {name!r}, which is already defined")
            producers[name] = node
    waiting, readers = {}, defaultdict(list)
    for index, node in enumerate(onnx_graph.node):
        needed = {name for name in node.input if name and name not in defined}
        for name in needed:
            if name not in producers:
                raise source.error(f"node {node.name!r} ({node.op_type}) reads {name!r}, which no node, input or "
                                   "initialiser defines")
            readers[name].append(index)
        waiting[index] = len({id(producers[name]) for name in needed})
    ready = deque(i for i, count in waiting.items() if count == 0)
    order = []
    while ready:
        index = ready.popleft()
        order.append(onnx_graph.node[index])
        for name in onnx_graph.node[index].output:
            for reader_index in readers.get(name, ()):
                waiting[reader_index] -= 1
                if waiting[reader_index] == 0:
                    ready.append(reader_index)
    if len(order) < len(onnx_graph.node):
        stuck = [n.name or n.op_type for i, n in enumerate(onnx_graph.node) if waiting[i] > 0]
        raise source.error(f"the graph has a cycle through nodes {stuck[:8]}")
    for value in onnx_graph.output:
        if value.name not in producers and value.name not in defined:
            raise source.error(f"graph output {value.name!r} is not defined by any node, input or initialiser")
    return order


_INVALID = re.compile(r"[^A-Za-z0-9_.]")


def _graph_name(name: str) -> str:
    return _INVALID.sub("_", name).strip("_.") or "onnx_model"


class _Importer(Builder):
    """The builder of one import: the ONNX name -> array or graph value environment, and the arrays
    that are initialisers (made parameters when a graph operator reads them)."""

    def __init__(self, name: str, source, used: set, producers: dict):
        super().__init__(Graph(name))
        self.source, self.used, self.producers = source, used, producers
        self.env: dict[str, object] = {}
        self.initialisers: dict[int, tuple[str, np.ndarray]] = {}     # id(array) -> (ONNX name, array)
        self.params: dict[int, Value] = {}
        self.onnx_names: dict[str, str] = {}

    def producer(self, name: str):
        """The ONNX node that defines value `name`, or None (an input or initialiser)."""
        return self.producers.get(name)

    def ir_name(self, onnx_name: str) -> str:
        """A fresh valid IR name for an ONNX input or initialiser, remembered in `onnx_names`."""
        name = _INVALID.sub("_", onnx_name).strip("_") or "value"
        name = self.graph.fresh_name(f"v{name}" if name.isdigit() else name)
        self.onnx_names[name] = onnx_name
        return name

    def add_initialiser(self, name: str, array: np.ndarray) -> None:
        array.flags.writeable = False
        self.initialisers[id(array)] = (name, array)
        self.env[name] = array

    def import_value(self, value) -> Value:
        """Arrays read by graph operators: an initialiser becomes a bound parameter, others constants."""
        if not isinstance(value, np.ndarray):
            return super().import_value(value)
        if id(value) in self.initialisers:
            if id(value) not in self.params:
                onnx_name, array = self.initialisers[id(value)]
                self.params[id(value)] = self.graph.add_param(self.ir_name(onnx_name),
                                                              TensorType(array.shape, array.dtype), binding=array)
            return self.params[id(value)]
        return self.graph.add_constant(value, self.current_scope())

    def convert(self, node: OnnxNode) -> None:
        """Fold or build one node and bind its outputs."""
        converter = CONVERTERS[node.op]
        inputs = [self.env[name] if name else None for name in node.proto.input]
        present = [x for x in inputs if x is not None]
        self.scope = _scope(node)
        try:
            if converter.fold is not None and all(isinstance(x, np.ndarray) for x in present):
                results = converter.fold(node, *inputs)
            else:
                results = self._build(converter, node, inputs)
        except OnnxError:
            raise
        except LucidError as exc:          # a shape rule refused what the model asks for
            raise node.error(str(exc)) from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
            raise node.error(f"malformed node ({type(exc).__name__}: {exc})") from None
        node.check_attributes_read()
        self._bind_outputs(node, results if isinstance(results, tuple) else (results,))
        if node.op in norm_patterns.LAST_OPS and node.proto.output[0] in self.env:
            fused = norm_patterns.fuse(node, self)
            if fused is not None:
                self.env[node.proto.output[0]] = fused

    def _build(self, converter, node: OnnxNode, inputs: list):
        for position in converter.static:
            if position < len(inputs) and inputs[position] is not None and not isinstance(inputs[position], np.ndarray):
                raise node.error(f"input {position} ({node.proto.input[position]!r}) must be a constant, or shape "
                                 "arithmetic lucid can fold at import; it is computed from the model's inputs")
        with building(self):
            lifted = [x if x is None or k in converter.static else self.import_value(x) for k, x in enumerate(inputs)]
            return converter.build(node, *lifted)

    def _bind_outputs(self, node: OnnxNode, results: tuple) -> None:
        for position, name in enumerate(node.proto.output):
            if not name or name not in self.used:
                continue
            if position >= len(results) or results[position] is None:
                raise node.error(f"output {position} ({name!r}) is not supported by lucid's import of {node.op}")
            result = results[position]
            self.env[name] = result if isinstance(result, Value) else np.asarray(result)

    def set_outputs(self, names: list) -> None:
        with building(self):
            self.scope = None
            values = [self.import_value(self.env[name]) for name in names]
        self.graph.set_outputs(values, len(values) > 1)


def _scope(node: OnnxNode) -> Scope:
    """The node's module path from its name and its op type. PyTorch names a node by its module
    calls (`/down.0/block/block.0/Conv`: a part extending the one before it replaces it, giving the
    state-dict path `down.0.block.0`)."""
    path: list[str] = []
    for part in node.name.split("/")[:-1]:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        elif part:
            path.append(part)
    return Scope(".".join(_INVALID.sub("_", p) for p in path), node.op)
