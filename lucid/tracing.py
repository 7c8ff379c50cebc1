"""`lucid.spec` and `lucid.trace`: turn a module or function into a `lucid.ir.Graph`.

Tracing calls the function once on graph values (`lucid.ir.Value`) that carry a type and no data, so
no kernel runs. Every operator call on them, and on eager tensors while the trace is active (so
`self.weight * 2` is recorded too), appends a node through the same operator functions eager code
uses; each node is typed by its operator's shape rule as it is recorded, because Python code reads
shapes (`x.view(x.shape[0], -1)`), and remembers the module (path and class) that was running.

Parameters enter the graph explicitly as named parameters, not constants:
- a module's parameters and buffers are named by their state-dict path and bound to the live tensors;
- in a traced function, a tensor that requires grad and belongs to no module becomes `param<k>`;
- any other eager tensor becomes a constant node holding a copy of its data.

Lazy modules met during the trace take their `in_channels` from the traced input's type and allocate
their parameters. The tracer keeps them in its own record (the graph holds no module) and, when the call
is over, draws their initial values itself in declaration order, so a seed gives the same weights
whatever order the modules run in; the trace ends with the shape-inference pass, a pure graph pass.

Sizes may be symbolic: `lucid.spec(lucid.dim("N"), 1, lucid.dim("D", min=16), 64, 64)` traces one graph
for every batch size and depth (`lucid.ir.symbolic`); shape rules propagate the symbols, and what they
(or the traced code) had to assume about them is recorded on the graph as constraints.

Random operators (dropout, `rand_like`) read the graph parameter `generator`, bound to lucid's
generator state (`lucid/random.py`), each with its draw number; the graph's state update advances the
state by its number of draws, so every run draws afresh and no mask is baked into the graph.
"""
from __future__ import annotations

import inspect
import itertools
import re

import numpy as np

from .errors import LucidError, TraceError
from .ir import ops
from .ir.graph import Builder, Graph, Scope, Value, building
from .ir.methods import _shape_arg
from .ir.symbolic import dim, free_symbols
from .ir.types import TensorType, as_dtype, float32, int64
from .tensor import Tensor, is_eager_tensor


class Spec:
    """A traced input described by shape and dtype alone (it carries no data)."""

    def __init__(self, shape: tuple, dtype=float32):
        if any(n < 0 for n in shape):
            raise TraceError(f"lucid.spec: sizes must be non-negative, got {shape}")
        self.shape, self.dtype = tuple(shape), as_dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"lucid.spec({', '.join(map(str, self.shape))}, dtype=lucid.{self.dtype})"


def spec(*shape, dtype=float32) -> Spec:
    """Describe an input by its shape (`spec(1, 1, 32, 32, 32)` or `spec((1, 1, 32, 32, 32))`) and dtype;
    a size may be a symbolic dimension (`lucid.dim("N")`) or an expression of them."""
    return Spec(_shape_arg(shape), dtype)


def trace(fn_or_module, *inputs, name: str | None = None) -> Graph:
    """Record `fn_or_module(*inputs)` as a graph; inputs are `lucid.spec`s or Tensors (only their types
    are used). Lazy modules are resolved and initialised; the returned graph has been through shape inference.
    A lucid error raised while tracing carries the graph recorded so far as `partial_graph` (and,
    when an operator's shape rule refused a node, that node as `failing_node`)."""
    from .passes import shape_inference

    if not callable(fn_or_module):
        raise TraceError(f"lucid.trace: expected a module or a function, got {type(fn_or_module).__name__}")
    tracer = _Tracer(fn_or_module, name)
    values = [tracer.graph.add_input(n, _input_type(x, n)) for n, x in zip(_input_names(fn_or_module, len(inputs)), inputs)]
    _check_symbols(values)
    try:
        with building(tracer):
            result = fn_or_module(*values)
            tracer.set_outputs(result)
            tracer.advance_generator()
    except LucidError as exc:
        exc.partial_graph = tracer.graph       # the nodes recorded before the failure (for lucid.viz)
        raise
    finally:
        tracer.initialise_lazy_modules()       # after a failure too, as eager would have: no module is left half made
    return shape_inference.run(tracer.graph)


def trace_in_eval_mode(fn_or_module, *inputs) -> Graph:
    """`trace` with a module in eval mode (BatchNorm's running statistics, Dropout off), given its own
    mode back afterwards: the graph that inference exports (`lucid.export`, `lucid.onnx.save`) write."""
    training = getattr(fn_or_module, "training", None)
    if training is not None:
        fn_or_module.eval()
    try:
        return trace(fn_or_module, *inputs)
    finally:
        if training is not None:
            fn_or_module.train(training)


def _check_symbols(values) -> None:
    """One declaration per symbolic dimension name across the inputs."""
    declared = {}
    for v in values:
        for s in free_symbols(v.shape):
            if declared.setdefault(s.name, s) != s:
                raise TraceError(f"lucid.trace: dimension {s.name} is declared twice, as {declared[s.name]!r} and {s!r}")


def _input_type(x, name: str) -> TensorType:
    if isinstance(x, (Spec, Tensor)):
        return TensorType(x.shape, x.dtype)
    raise TraceError(f"lucid.trace: input {name!r} must be a lucid.spec or a Tensor, got {type(x).__name__}")


def _input_names(fn, count: int) -> list[str]:
    """The function's positional parameter names (`input<i>` past them, or for *args)."""
    target = fn.forward if hasattr(fn, "forward") else fn
    try:
        params = [p.name for p in inspect.signature(target).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"input{i}" for i in range(count)]


def _graph_name(fn, name: str | None) -> str:
    fn = getattr(fn, "__wrapped__", fn)              # a compiled module is named after its module
    name = name or (type(fn).__name__ if hasattr(fn, "forward") else getattr(fn, "__name__", "graph"))
    return re.sub(r"[^A-Za-z0-9_.]", "_", name).strip("_") or "graph"


class _Tracer(Builder):
    """The builder of `trace`: knows the module call stack, the traced module's named tensors and
    the lazy modules whose initialisation it defers to the end of the call."""

    def __init__(self, fn, name: str | None):
        super().__init__(Graph(_graph_name(fn, name)))
        self.root = fn if hasattr(fn, "named_modules") else None
        # id(tensor) -> (tensor, graph value); holding the tensor keeps its id from being reused
        self.imported: dict[int, tuple[Tensor, Value]] = {}
        self.anonymous = itertools.count()
        self.paths: dict[int, str] = {}             # id(module) -> path inside the root
        self.lazy_modules: list[tuple[int, object]] = []   # (declaration index, module) still to initialise
        self.generator: Value | None = None         # the parameter bound to lucid's generator state
        self.draws = 0                              # random draws recorded so far

    # ------------------------------------------------------------------ scopes
    def _root(self):
        from .nn.module import _call_stack

        stack = _call_stack()
        return self.root if self.root is not None else (stack[0] if stack else None)

    def current_scope(self) -> Scope | None:
        from .nn.module import _call_stack

        stack, root = _call_stack(), self._root()
        if not stack or root is None:
            return None
        module = stack[-1]
        if id(module) not in self.paths:
            self.paths = {id(m): p for p, m in root.named_modules()}
        return Scope(self.paths.get(id(module), ""), type(module).__name__)

    # ------------------------------------------------------------------ eager tensors
    def import_value(self, value) -> Value:
        if not is_eager_tensor(value):
            return super().import_value(value)
        if id(value) not in self.imported:
            self.imported[id(value)] = (value, self._import_tensor(value))
        return self.imported[id(value)][1]

    def _import_tensor(self, tensor: Tensor) -> Value:
        name = self._tensor_name(tensor)
        if name is None and not tensor.requires_grad:
            return self.graph.add_constant(tensor.data, self.current_scope())
        name = self.graph.fresh_name(name or f"param{next(self.anonymous)}")
        return self.graph.add_param(name, TensorType(tensor.shape, tensor.dtype), binding=tensor)

    def _tensor_name(self, tensor: Tensor) -> str | None:
        root = self._root()
        if root is None:
            return None
        named = itertools.chain(root.named_parameters(), root.named_buffers())
        return next((n for n, t in named if t is tensor), None)

    # ------------------------------------------------------------------ lazy modules and state
    def defer_initialisation(self, module) -> bool:
        root = self._root()
        order = next((i for i, (_, m) in enumerate(root.named_modules()) if m is module), 0) if root else 0
        self.lazy_modules.append((order, module))
        return True

    def initialise_lazy_modules(self) -> None:
        """Draw the deferred modules' initial values from lucid's global generator, in declaration
        order (the order of `root.named_modules()`); their tensors are the ones the graph binds."""
        for _, module in sorted(self.lazy_modules, key=lambda entry: entry[0]):
            module.reset_parameters()
        self.lazy_modules = []

    def record_update(self, target, value: Value) -> None:
        param = self.import_value(target)
        if param.node is not None:
            raise TraceError(f"lucid.trace: an in-place update of a tensor that is not a module buffer ({target.shape})")
        self.graph.state_updates[param.name] = value

    def assign_in_place(self, target, value: Value) -> None:
        """Later reads of `target` in this trace read `value`; a module parameter or buffer (a graph
        parameter) also gets `value` as its state update, written back when the graph runs."""
        current = self.import_value(target)
        if current.node is None:
            self.graph.state_updates[current.name] = value
        self.imported[id(target)] = (target, value)

    # ------------------------------------------------------------------ random draws
    def random_draw(self, state: np.ndarray) -> tuple[Value, int]:
        """The graph's generator parameter, bound to lucid's generator `state` (seed, counter), and
        the number of this draw among the trace's; `advance_generator` moves the state past them."""
        if self.generator is None:
            name = self.graph.fresh_name("generator")
            self.generator = self.graph.add_param(name, TensorType(state.shape, int64), binding=state)
        self.draws += 1
        return self.generator, self.draws - 1

    def advance_generator(self) -> None:
        """Record the state update that advances the generator's counter by the trace's draws, so each
        run of the graph draws new numbers (as as many eager draws would)."""
        if self.draws:
            self.graph.state_updates[self.generator.name] = ops.add(self.generator, np.array([0, self.draws]))

    # ------------------------------------------------------------------ outputs
    def set_outputs(self, result) -> None:
        as_tuple = isinstance(result, (tuple, list))
        items = list(result) if as_tuple else [result]
        for item in items:
            if not isinstance(item, (Value, Tensor)):
                raise TraceError(f"lucid.trace: the traced function must return tensors (or a tuple of them), "
                                 f"got {type(item).__name__}")
        self.graph.set_outputs([self.import_value(v) for v in items], as_tuple)
